"""Reading YAML a user gave: bounded, strict and with one-line errors.

Every YAML capsim reads from a user (scenario files and uploads, Kubernetes manifests, values given
with ``--set`` / ``--param`` / ``--vary``) goes through :func:`read_yaml` or :func:`read_yaml_all`:

* safe types only (``!!python`` tags are refused);
* a key given twice in one mapping is an error (plain YAML silently keeps the last);
* bounded: at most ``MAX_TEXT_CHARS`` characters, and at most ``MAX_NODES`` values once aliases are
  expanded, so an "alias bomb" (a few hundred bytes that expand to billions of values) is refused
  before anything is built; recursive aliases and absurd nesting are refused too;
* numbers such as ``1e12`` and ``-5E3`` are read as numbers (YAML 1.1 would read them as strings).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ScenarioError

MAX_TEXT_CHARS = 2_000_000
MAX_FILE_BYTES = 8 * MAX_TEXT_CHARS  # bytes read before refusing a file without decoding it all
MAX_NODES = 200_000


def read_text_file(path: Path, what: str = "a scenario") -> str:
    """A user's YAML file as text: it must exist, be small enough and be UTF-8."""
    if not path.is_file():
        raise ScenarioError(f"{path}: not a file")
    size = path.stat().st_size
    if size > MAX_TEXT_CHARS * 4:
        raise ScenarioError(f"{path}: {size:,} bytes; {what} is YAML text of at most {MAX_TEXT_CHARS:,} characters")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                            f"{what} is a YAML text file") from None


def read_yaml(text: str, source: str, what: str = "a scenario") -> Any:
    """One YAML document from ``text``; ``source`` names it in errors (a path, ``--set fleet.replicas``)."""
    documents = read_yaml_all(text, source, what)
    if len(documents) > 1:
        raise ScenarioError(f"{source}: {len(documents)} YAML documents; {what} is one document")
    return documents[0] if documents else None


def read_yaml_all(text: str, source: str, what: str = "a scenario") -> list[Any]:
    """Every YAML document in ``text`` (a manifest file may hold several)."""
    if len(text) > MAX_TEXT_CHARS:
        raise ScenarioError(f"{source}: {len(text):,} characters; {what} may have at most {MAX_TEXT_CHARS:,}")
    loader = _StrictLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            _check_size(node, source)
            documents.append(loader.construct_document(node))
        return documents
    except _DuplicateKey as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]
        raise ScenarioError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ScenarioError(f"{source}: nested too deeply to be {what}") from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, source: str) -> None:
    """Count the values the document holds once every alias is expanded, without expanding them."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size:
            continue
        children = _children(node)
        if children_done:
            open_.discard(key)
            total = 1 + sum(size[id(c)] for c in children)
            if total > MAX_NODES:
                raise ScenarioError(f"{source}: expands to more than {MAX_NODES:,} values (aliases that repeat "
                                    "aliases); refused")
            size[key] = total
            continue
        if key in open_:
            raise ScenarioError(f"{source}: an alias refers to a value that contains it (a recursive alias)")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader, except that a key given twice in one mapping is an error (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {line}); "
                                    "YAML would silently keep the last, remove one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# 1e12, -5E3, 2.5e-3 are numbers (YAML 1.1's float pattern needs a dot before the exponent).
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
