"""Uploaded files: where they are kept, how large they may be, and which files a scenario may read.

No streamlit here. ``dashboard/state.py`` gives each browser session its own :class:`UploadDir`: a
private directory (``tempfile.mkdtemp``: a random name, mode 0700) removed when the session's state is
collected after the session ends, or when the server exits. A scenario loaded in the dashboard may
read only files uploaded in that session or shipped with capsim (the examples folder and the shipped
profiles); :func:`check_files` refuses any other path before anything is read.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from sim.errors import CapsimError, ScenarioError, shown
from sim.profiles.profile import BUILTIN_DIR, list_builtin_profiles
from sim.scenario.examples import EXAMPLES_DIR

MAX_UPLOAD_MB = 50  # the same limit as server.maxUploadSize in dashboard/.streamlit/config.toml
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
SHIPPED_DIRS = (EXAMPLES_DIR.resolve(), BUILTIN_DIR.resolve())


class UploadDir:
    """A private directory holding one session's uploads, content-addressed (a re-upload is one file)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="capsim-dashboard-")).resolve()
        # Runs when this object is collected (its session is gone) or at interpreter exit, whichever is first.
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def store(self, data: bytes, suffix: str, name: str) -> Path:
        """Write ``data`` (an upload called ``name``) once under a name derived from its content."""
        check_size(len(data), name)
        path = self.path / (hashlib.sha256(data).hexdigest()[:20] + suffix)
        if not path.exists():
            part = path.with_suffix(path.suffix + ".part")
            part.write_bytes(data)
            part.replace(path)
        return path

    def remove(self) -> None:
        """Delete the directory and everything in it now."""
        self._remove()


def check_size(size_bytes: int, name: str) -> None:
    """Refuse an upload over :data:`MAX_UPLOAD_MB`, naming the file and both sizes."""
    if size_bytes > MAX_UPLOAD_BYTES:
        raise CapsimError(f"{name}: {size_bytes / 2**20:,.1f} MB; the dashboard takes uploads of at most "
                          f"{MAX_UPLOAD_MB} MB (run larger inputs with `capsim simulate`)")


# ---------------------------------------------------------------- files a scenario refers to
def referenced_files(data: dict[str, Any], base_dir: str | Path) -> dict[str, str]:
    """Every file a scenario (as plain YAML data) would read: dotted key -> the path as written.

    A shipped profile's name is no path (unless a file of that name sits in ``base_dir``, which the
    simulator tries first).
    """
    found: dict[str, str] = {}
    workload = data.get("workload")
    arrivals = workload.get("arrivals") if isinstance(workload, dict) else None
    if isinstance(arrivals, dict) and isinstance(arrivals.get("path"), str):
        found["workload.arrivals.path"] = arrivals["path"]
    for key in ("input_tokens", "output_tokens"):  # an llm scenario's lengths drawn from a file (empirical)
        tokens = workload.get(key) if isinstance(workload, dict) else None
        if isinstance(tokens, dict) and isinstance(tokens.get("path"), str):
            found[f"workload.{key}.path"] = tokens["path"]
    service = data.get("service")
    if isinstance(service, dict) and isinstance(service.get("profile"), str):
        ref = service["profile"]
        if ref not in list_builtin_profiles() or (Path(base_dir) / ref).is_file():
            found["service.profile"] = ref
    autoscaler = data.get("autoscaler")
    if isinstance(autoscaler, dict):
        for key in ("from_manifest", "deployment"):
            if isinstance(autoscaler.get(key), str):
                found[f"autoscaler.{key}"] = autoscaler[key]
    return found


def check_files(data: Any, base_dir: str | Path, upload_dir: Path, source: str = "scenario") -> None:
    """Refuse a scenario that refers to a file neither uploaded to ``upload_dir`` nor shipped with capsim."""
    if not isinstance(data, dict):
        return  # not a scenario at all; the scenario reader says so
    roots = (upload_dir.resolve(), *SHIPPED_DIRS)
    refused = [f"{key} = {shown(given)}" for key, given in referenced_files(data, base_dir).items()
               if not _inside(given, Path(base_dir), roots)]
    if refused:
        raise ScenarioError(f"{source}: {', '.join(refused)}: the dashboard reads only files uploaded in this "
                            "session or shipped with capsim (its examples and profiles); upload the file here, "
                            "or run the scenario with `capsim simulate`")


def _inside(given: str, base: Path, roots: tuple[Path, ...]) -> bool:
    """Whether ``given`` (relative to ``base``; ``~`` expanded; links followed) lies under one of ``roots``."""
    try:
        path = Path(given).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
    except (ValueError, OSError, RuntimeError):  # a NUL byte, an unknown ~user, a link loop
        return False
    return any(path.is_relative_to(root) for root in roots)
