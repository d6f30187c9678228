"""Record the GPU validation suite's real server runs on a CUDA machine, for the test suite to validate.

Per model (``--models``, each NAME:DTYPE), the GPU recipe of ``calibration/validation_suite.py``: a
``capsim calibrate --device cuda`` (every batch size 1..32, idle sweep, serving replay, load times), a
2 s pilot per batching setting, and nine ``capsim bench-serve --device cuda`` runs (B 1, 8, 32 at 30,
60 and 85% of the pilot's capacity). Then, when time is left, ``capsim calibrate --mode llm`` and
``--mode train`` on the GPU, to show those paths run on hardware.

A device lease is short, so the recording is kept part by part: each finished profile and run is
copied into ``--out`` (``<out>/<model>-<dtype>/``) at once, and with ``--tar DIR`` ``--out`` is written
there after each part (a tar per model and ``top.tar`` for the files beside them). At ``--deadline-s`` after the start no new part is
begun; what finished stays.

    python scripts/record_validation_gpu.py --out tests/data/recordings/gpu-h200 --tar $OUT \\
        --deadline-s 480 --models bert-encoder:fp16,resnet50:fp16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from record_validation_cpu import keep_one, recording_facts  # noqa: E402

from calibration.validation_suite import capsim, gpu_recipe, record_suite  # noqa: E402


class OutOfTime(Exception):
    """The recording's deadline passed: no new part is begun."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tar", type=Path, default=None,
                        help="a folder: after each part, --out as <model>.tar per model and top.tar")
    parser.add_argument("--models", default="bert-encoder:fp16,resnet50:fp16")
    parser.add_argument("--deadline-s", type=float, default=480.0, help="begin no new part after this")
    parser.add_argument("--commit", default="", help="the commit recorded (the tree may travel without .git)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out")
    parser.add_argument("--extras", default="llm,train", help="after the first model: llm, train (or none)")
    args = parser.parse_args()
    from calibration.machine_load import measure

    started = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"

    def note(line: str) -> None:
        stamped = f"[{time.time() - started:7.1f} s] {line}"
        print(stamped, flush=True)
        with log.open("a") as f:
            f.write(stamped + "\n")

    def pack() -> None:
        """One tar per model folder and one of the files beside them (each under a transfer's size limit)."""
        if not args.tar:
            return
        parts = {p.name: [p] for p in out.iterdir() if p.is_dir()}
        parts["top"] = [p for p in out.iterdir() if p.is_file()]
        for name, paths in parts.items():
            tar_path = args.tar / f"{name}.tar"
            with tarfile.open(tar_path.with_suffix(".tmp"), "w") as tar:
                for path in paths:
                    tar.add(path, arcname=f"{out.name}/{path.name}")
            tar_path.with_suffix(".tmp").replace(tar_path)

    def in_time() -> None:
        if time.time() - started > args.deadline_s:
            raise OutOfTime

    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
        (out / "nvidia-smi.txt").write_text(smi.stdout + smi.stderr)
    pack()
    dtype16 = "fp16" if args.device == "cuda" else "fp32"
    models = [tuple(m.split(":")) for m in args.models.split(",") if m]
    extras = [e for e in args.extras.split(",") if e and e != "none"]
    for i, (model, dtype) in enumerate(models):
        recipe = gpu_recipe(model, dtype, args.device)
        folder = out / f"{model}-{dtype}"
        probe, before, t0 = measure(), os.getloadavg()[0], time.time()

        def done(path: Path, folder: Path = folder) -> None:
            keep_one(path, folder)
            note(f"kept {folder.name}/{path.name}")
            pack()
            in_time()

        with tempfile.TemporaryDirectory(prefix="capsim-gpu-") as tmp:
            suite, failure = None, None
            try:
                in_time()
                suite = record_suite(Path(tmp), repeat=False, recipe=recipe, done=done)
            except OutOfTime:
                failure = "deadline"
            except Exception:  # noqa: BLE001 - keep what finished and go on to the next part
                failure = traceback.format_exc()[-3000:]
            runs = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []
            facts = recording_facts(t0, before, os.getloadavg()[0], probe) | {"git_commit": args.commit}
            (folder / "recording.json").parent.mkdir(parents=True, exist_ok=True)
            (folder / "recording.json").write_text(json.dumps({
                **facts, "recipe": {"model": model, "dtype": dtype, "device": args.device,
                                    "settings": recipe.settings, "loads": recipe.loads},
                "complete": len(runs) == len(recipe.settings) * len(recipe.loads), "stopped_by": failure,
                "runs": runs,
                "commands": [[part.replace(tmp, "RUN_DIR_PARENT") for part in cmd] for cmd in suite.commands]
                if suite else None,
            }, indent=2) + "\n")
            note(f"{folder.name}: {'complete' if failure is None else 'stopped: ' + failure.splitlines()[-1]}")
            if failure and failure != "deadline":
                note(failure)
            pack()
        if i == 0:
            for extra in extras:
                if time.time() - started > args.deadline_s:
                    break
                try:
                    if extra == "llm":
                        capsim("calibrate", "--mode", "llm", "--model", "decoder", "--device", args.device, "--dtype", dtype16, "--quick",
                               "--no-progress", "--out", str(out / f"profile-{args.device}-decoder-llm.json"))
                    elif extra == "train":
                        capsim("calibrate", "--mode", "train", "--model", "mlp-2048", "--device", args.device,
                               "--world-size", "1", "--quick", "--no-progress",
                               "--out", str(out / f"profile-{args.device}-mlp-2048-train.json"))
                    note(f"extra {extra}: done")
                except Exception:  # noqa: BLE001
                    note(f"extra {extra} failed:\n{traceback.format_exc()[-3000:]}")
                pack()
        if time.time() - started > args.deadline_s:
            note("deadline: no further model")
            break
    note("finished")
    pack()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
