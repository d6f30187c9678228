"""`capsim dashboard [--port P] [--headless]`: start the Streamlit what-if dashboard."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="start the what-if dashboard (Streamlit) in the browser",
                       description="Start the Streamlit what-if dashboard on localhost.")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default: %(default)s)")
    p.add_argument("--address", default="localhost", help="address to bind (default: %(default)s)")
    p.add_argument("--headless", action="store_true", help="do not open a browser; just print the URL")
    p.set_defaults(func=main)


def command(port: int, address: str = "localhost", headless: bool = False) -> list[str]:
    """The streamlit command line, run with this interpreter so the venv's packages are used."""
    import sys

    return [sys.executable, "-m", "streamlit", "run", str(app_path()), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true" if headless else "false",
            "--browser.gatherUsageStats", "false"]


def app_path() -> Path:
    """The Streamlit entry point of the installed ``dashboard`` package (a checkout or site-packages)."""
    import importlib.util

    spec = importlib.util.find_spec("dashboard")
    if spec is None or spec.origin is None:
        from sim.errors import CapsimError

        raise CapsimError("the dashboard package is not installed with capsim: pip install 'capsim[dashboard]'")
    return Path(spec.origin).resolve().parent / "app.py"


def main(args) -> int:
    import importlib.util
    import os
    import subprocess

    from sim.errors import CapsimError

    if importlib.util.find_spec("streamlit") is None:
        raise CapsimError("the dashboard needs streamlit: pip install 'capsim[dashboard]'")
    if not 0 < args.port < 65536:
        raise CapsimError(f"--port = {args.port}: must be 1..65535")
    cmd = command(args.port, args.address, args.headless)
    print(f"capsim dashboard: http://{args.address}:{args.port}  (Ctrl+C stops it)", flush=True)
    if os.name == "posix":  # streamlit takes this process over, so stopping `capsim dashboard` stops the server
        os.execv(cmd[0], cmd)
    return subprocess.call(cmd)
