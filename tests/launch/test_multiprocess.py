"""Multi-host on one machine: launch/local_multiprocess.sh with 2 processes x 2 CPU devices.

Each test starts real processes joined through a local coordinator and gloo, as
`omni-img train` is on a cluster: losses must match one process with the same 4
devices and global batch, a checkpoint written by 2 processes must restore in one,
and a killed process must make the other exit (not hang) and a relaunch resume.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.support.multiprocess import ENTRY, launch, launch_env
from tests.support.tokenized import write_tokenized

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 6


def single(stage, workdir, steps, *extra, devices=4):
    command = [sys.executable, str(ENTRY), stage, str(workdir), str(steps), *extra]
    result = subprocess.run(
        command, cwd=ROOT, env=launch_env(devices), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def losses(workdir) -> list[float]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


@pytest.mark.parametrize(
    "stage", [pytest.param("tokenizer", marks=pytest.mark.slow), "generator"]
)  # the tokenizer case runs in .ci/slow
def test_two_processes_match_one_and_their_checkpoint_restores_in_one(stage, tmp_path):
    extra = ["--tokens", str(write_tokenized(tmp_path / "tokens"))] if stage == "generator" else []
    two, one = tmp_path / "two", tmp_path / "one"
    process = launch(stage, two, STEPS, *extra)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    assert "joined as process 1 of 2, 2 local devices" in out
    single(stage, one, STEPS, *extra)

    reference = losses(one)
    assert len(reference) == STEPS and reference[0] != reference[-1]
    np.testing.assert_allclose(losses(two), reference, rtol=1e-5)

    single(stage, two, STEPS, *extra, "--restore_to", str(tmp_path / "two.npz"), devices=1)
    single(stage, one, STEPS, *extra, "--restore_to", str(tmp_path / "one.npz"), devices=1)
    restored, expected = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert int(restored["step"]) == STEPS
    assert sorted(restored.files) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_allclose(restored[name], expected[name], rtol=1e-4, atol=1e-6)


def _finished_checkpoints(workdir) -> list[int]:
    """Steps whose checkpoint is complete (Orbax renames a finished save to its step)."""
    folder = pathlib.Path(workdir) / "checkpoints"
    return [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []


def test_a_killed_process_stops_the_other_and_a_relaunch_resumes(tmp_path):
    workdir = tmp_path / "run"
    steps = 40
    # Slow reads (0.05 s a record, 8 records a step per process) keep the run going.
    process = launch("tokenizer", workdir, steps, "--delay", "0.05")
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")))
    reader.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(s >= 4 for s in _finished_checkpoints(workdir)):
        time.sleep(0.2)
    pids = dict(re.findall(r"process (\d): pid (\d+)", "".join(output)))
    if len(pids) != 2 or not _finished_checkpoints(workdir):
        process.kill()
        pytest.fail("the run wrote no checkpoint in time:\n" + "".join(output))

    os.kill(int(pids["1"]), signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("process 0 did not exit within 60 s of process 1's death")
    elapsed = time.monotonic() - killed_at
    reader.join()
    out = "".join(output)
    assert process.returncode != 0, out
    assert re.search(r"process 0 \(pid \d+\) exited with status [1-9]", out), out
    # How the survivor learns of it depends on where the kill lands: a missed heartbeat,
    # or a collective (the checkpoint's barrier) whose peer socket closed or reset.
    peer_died = ("stopped sending heartbeats", "heartbeat timeout", "Socket closed",
                 "Connection reset by peer")  # fmt: skip
    assert any(message in out for message in peer_died), out
    assert elapsed < 60

    last_checkpoint = max(_finished_checkpoints(workdir))
    resumed = launch("tokenizer", workdir, steps)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resumed from this workdir at step {last_checkpoint}" in out, out
    assert last_checkpoint < steps
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert max(entry["step"] for entry in logged if "loss" in entry) == steps
    assert json.loads((workdir / "tokenizer_eval.json").read_text())["steps"] == steps
