"""The tokenizer worker (tests/training/run_tokenizer.py) as a subprocess, and the
checkpoints it finished: the resume tests in tests/training and tests/chaos run it."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "training" / "run_tokenizer.py"


def run_worker(*args, check=True, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    command = [sys.executable, str(WORKER), *map(str, args)]
    if kwargs.pop("background", False):
        return subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return subprocess.run(
        command, env=env, cwd=ROOT, check=check, capture_output=True, text=True, timeout=600
    )


def finished_checkpoints(workdir: pathlib.Path) -> list[int]:
    folders = (workdir / "checkpoints").iterdir() if (workdir / "checkpoints").is_dir() else ()
    return sorted(
        int(p.name) for p in folders if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()
    )
