"""Where outputs go: every output path checked before any work starts, folders and files written atomically.

A folder is written into a hidden temporary sibling (``.NAME.<random>.tmp``) and renamed into place when
complete. An existing folder is replaced only when the caller allows it (``force``, or a folder the command
itself wrote before): the old folder is moved aside, the new one renamed in, then the old one deleted, so a
reader sees the old folder or the new one, never a mix. A write that fails or is interrupted (Ctrl-C)
leaves the old folder as it was and no temporary folder behind. A single file is written to a temporary
file in its own folder and moved into place with ``os.replace`` (a file may be overwritten: that is what
``--out FILE`` means).

The checks (``check_folder``, ``check_file``) raise :class:`OutputError`, one line naming the flag, the path
and what is allowed; they try to create an entry where the output will go, so a read-only folder, ``/proc``
or a parent that is a file is refused before any simulation runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sim.errors import CapsimError

FORCE_HINT = "give --force to replace it, or a new folder"
SHOWN_PATH_CHARS = 240  # paths are shown whole up to this length (the middle is cut beyond)


class OutputError(CapsimError):
    """An output path that cannot be written as asked."""


def bad_path(flag: str, path: str | Path, allowed: str) -> str:
    """One message in the house format, ``flag = 'path': allowed``, with the path shown whole unless huge."""
    text = repr(str(path))
    if len(text) > SHOWN_PATH_CHARS:
        half = SHOWN_PATH_CHARS // 2 - 2
        text = text[:half] + "..." + text[-half:]
    return f"{flag} = {text}: {allowed}"


# ---------------------------------------------------------------- checks, before any work
def check_folder(path: str | Path, flag: str = "--out", *, force: bool = False,
                 replaceable: Callable[[Path], bool] | None = None, inputs: Iterable[str | Path] = (),
                 refusal: str = FORCE_HINT) -> Path:
    """``path`` as an output folder: missing, empty, a folder ``replaceable`` accepts (the command's own
    earlier output) or, with ``force``, any folder that holds neither the working directory nor one of
    ``inputs``. Its nearest existing parent must be a folder this process can create entries in."""
    path = Path(path)
    if path.is_dir():
        if any(path.iterdir()) and not (force or (replaceable is not None and replaceable(path))):
            raise OutputError(bad_path(flag, path, f"a folder that exists and is not empty; {refusal}"))
        _check_holds_nothing_given(path, flag, inputs)
    elif path.exists() or path.is_symlink():
        raise OutputError(bad_path(flag, path, "is a file; a folder is needed (missing or empty)"))
    _probe(path, flag, folder=True)
    return path


def check_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output file: missing or a file (overwritten), in a folder this process can write."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(bad_path(flag, path, "is a folder; a file path is needed"))
    _probe(path, flag, folder=False)
    return path


def _check_holds_nothing_given(path: Path, flag: str, inputs: Iterable[str | Path]) -> None:
    """Replacing ``path`` must not delete the working directory or anything the user gave."""
    target = path.resolve()
    for given, what in [(Path.cwd(), "the current folder"), *((Path(p), f"the input {p}") for p in inputs)]:
        given = given.resolve()
        if given == target or target in given.parents:
            raise OutputError(bad_path(flag, path, f"holds {what}, which replacing it would delete; "
                                        "give a new folder"))


def _probe(path: Path, flag: str, folder: bool) -> None:
    """Create (and remove) an entry in the nearest existing parent of ``path``: the write can happen."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(bad_path(flag, path, f"{parent} is a file, not a folder"))
    probe = _sibling(parent / "capsim-probe", "probe")
    try:
        if folder:
            probe.mkdir()
            probe.rmdir()
        else:
            probe.touch(exist_ok=False)
            probe.unlink()
    except OSError as exc:
        raise OutputError(bad_path(flag, path, f"cannot write in {parent} ({exc.strerror or exc})")) from None


# ---------------------------------------------------------------- atomic writers
@contextmanager
def writing_folder(path: str | Path, flag: str = "--out", *, force: bool = False,
                   replaceable: Callable[[Path], bool] | None = None, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling folder to write into; when the block ends without error it becomes
    ``path`` (an old folder there, allowed as in :func:`check_folder`, is replaced, its ``keep`` entries
    carried over); when the block raises, it is removed and ``path`` is left as it was."""
    path = check_folder(path, flag, force=force, replaceable=replaceable)
    made = _make_parents(path.parent)
    staging = _sibling(path, "tmp")
    staging.mkdir()
    try:
        try:
            yield staging
            check_folder(path, flag, force=force, replaceable=replaceable)  # still allowed after the work
            with _ctrl_c_held():
                _swap(staging, path, keep)
        except OSError as exc:
            raise _write_error(flag, path, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        raise


@contextmanager
def writing_file(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, not yet created); when the block ends without
    error it replaces ``path`` in one step; when the block raises, it is removed."""
    path = check_file(path, flag)
    made = _make_parents(path.parent)
    tmp = _sibling(path, "tmp")
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as exc:
            raise _write_error(flag, path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(made)
        raise


def write_text(path: str | Path, text: str, flag: str = "--out") -> Path:
    """``text`` written to ``path`` atomically."""
    with writing_file(path, flag) as tmp:
        tmp.write_text(text)
    return Path(path)


def _sibling(path: Path, kind: str) -> Path:
    """A hidden name next to ``path`` that keeps its suffix (savefig picks the format from it)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.{kind}{path.suffix}")


def _swap(staging: Path, target: Path, keep: tuple[str, ...]) -> None:
    """``staging`` renamed to ``target``; an old ``target`` moved aside first, its ``keep`` entries moved
    into the new folder, and deleted after. On failure everything is put back as it was."""
    if not target.exists():
        os.rename(staging, target)
        return
    aside = _sibling(target, "old")
    moved = []
    try:
        for name in keep:
            if (target / name).exists() and not (staging / name).exists():
                os.rename(target / name, staging / name)
                moved.append(name)
        os.rename(target, aside)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(aside, target)
            raise
    except OSError:
        for name in moved:
            os.rename(staging / name, target / name)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold Ctrl-C back for the few renames of a swap (raised right after), so one is never half done."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; the ones created, deepest first."""
    made = []
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    for f in reversed(made):
        f.mkdir(exist_ok=True)
    return made


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_error(flag: str, path: Path, exc: OSError) -> OutputError:
    """A failed write (disk full, permissions changed meanwhile) as one line; the old output is untouched."""
    reason = exc.strerror or str(exc).splitlines()[0][:200]
    where = f" at {Path(exc.filename).name}" if exc.filename else ""
    return OutputError(bad_path(flag, path, f"writing failed{where} ({reason}); nothing was replaced"))
