"""Multi-host on one machine: launch/local_multiprocess.sh starting PROCESSES x DEVICES
CPU processes of tests/launch/run_stage.py (tests/launch and tests/chaos launch it)."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "launch" / "local_multiprocess.sh"
ENTRY = ROOT / "tests" / "launch" / "run_stage.py"


def launch_env(devices: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_IMG_")}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}" if devices else ""
    env["JAX_PLATFORMS"] = "cpu"
    return env


def launch(stage, workdir, steps, *extra, processes=2, devices=2, **popen):
    command = [str(LAUNCHER), str(processes), str(devices), "--",
               sys.executable, str(ENTRY), stage, str(workdir), str(steps), *extra]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, **popen,
    )  # fmt: skip
