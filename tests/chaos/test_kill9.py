"""kill -9 at 10 random moments of a short run (during steps, during an async save,
during the final evaluation), each followed by a restart. Every restart resumes from
the newest committed step and logs, step for step, what an uninterrupted run logs (loss,
gradient, update and param norms, input checksum: bit for bit), and the run ends on
bitwise the uninterrupted run's params.

Each kill aims at a phase (four at steps and four at saves in a seeded random order,
then two at the evaluation, which comes once, after the last step) and waits a random
time into it; the worker's phase log (tests.chaos.phases) says where each one landed.
"""

import collections
import json
import random
import signal
import time

import numpy as np
import pytest

from tests.chaos.compile_cache import cache_environment
from tests.chaos.phases import events, phase_at_death, seconds_between
from tests.support.workers import finished_checkpoints, run_worker

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
STEPS, EVERY, KILLS, DEVICES = 12, 2, 10, 2
COMPARED = ("loss", "grad_norm", "update_norm", "param_norm", "input_checksum")
WAIT_SECONDS = 1800  # a niced worker on a busy 2-core machine compiles for minutes


def _runs(workdir) -> list[list[dict]]:
    """metrics.jsonl split into the records of each run (each begins with start_step)."""
    runs: list[list[dict]] = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "start_step" in record:
            runs.append([])
        runs[-1].append(record)
    return runs


def _run_to_the_end(workdir, *args):
    """An uninterrupted worker run (the shared helper's 600 s is too short here on a
    busy machine: this one compiles for the restarts too)."""
    process = run_worker(workdir, STEPS, DEVICES, "--checkpoint_every", EVERY, *args,
                          background=True)  # fmt: skip
    assert process.wait(timeout=WAIT_SECONDS) == 0, f"the worker on {workdir} failed"


def _starts_logged(workdir) -> int:
    """How many runs logged their start_step (after compiling, before the first step);
    counted without parsing, as the worker may be writing a line."""
    metrics = workdir / "metrics.jsonl"
    return metrics.read_text().count('"start_step"') if metrics.exists() else 0


def _wait_for(condition, process, what: str) -> bool:
    """True once `condition()` holds while `process` runs; False if it exited first."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"no {what} in {WAIT_SECONDS} s"
        time.sleep(0.01)
    return True


def _kill_in(aim: str, process, log, workdir, rng, eval_seconds: float) -> bool:
    """Wait for the phase `aim`, then a random time into it, then SIGKILL; False if the
    worker ended first.

    An async save here lasts until the next one starts (the loop seals it there), so a
    run is in steps only before its first save: a step kill comes within 0.5 s of the
    run's first step (two steps of 16 slow reads each come before that save). A save
    kill waits for the run's 1st, 2nd or 3rd save to start, the ones before it sealed,
    so the restarts resume from later and later steps."""
    if aim == "steps":
        runs = _starts_logged(workdir)
        started = lambda: _starts_logged(workdir) > runs  # noqa: E731
        arrived = _wait_for(started, process, "first step")
        pause = rng.uniform(0.0, 0.5)
    elif aim == "save":
        nth = rng.randint(1, 3)
        saving = lambda: sum(e.startswith("save_start") for e in events(log)) >= nth  # noqa: E731
        arrived = _wait_for(saving, process, f"save number {nth}")
        pause = rng.uniform(0.0, 0.05)
    else:
        arrived = _wait_for(lambda: "eval_start" in events(log), process, "evaluation")
        pause = rng.uniform(0.0, 0.8 * eval_seconds)
    if not arrived:
        return False
    time.sleep(pause)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def _in_flight_save(log) -> str | None:
    started = [e.split()[1] for e in events(log) if e.startswith("save_start ")]
    sealed = {e.split()[1] for e in events(log) if e.startswith("save_sealed ")}
    return next((step for step in started if step not in sealed), None)


def _differences(run: list[dict], whole: dict[int, dict], label: str) -> list[str]:
    """Each logged value of `run` that is not bitwise the uninterrupted run's."""
    return [
        f"{label}, step {record['step']}: {name} {record.get(name)!r} != {want.get(name)!r}"
        for record in run
        if "loss" in record
        for want in [whole[record["step"]]]
        for name in COMPARED
        if record.get(name) != want.get(name)
    ]


def test_ten_random_kills_end_bitwise_equal(tmp_path, monkeypatch):
    for name, value in cache_environment(tmp_path / "jax_cache").items():
        monkeypatch.setenv(name, value)  # the workers inherit it: compiled once, not 12 times
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _run_to_the_end(whole, "--dump", tmp_path / "whole.npz", "--phase_log", tmp_path / "whole.log")
    eval_seconds = seconds_between(tmp_path / "whole.log", "eval_start", "eval_end")
    (whole_run,) = _runs(whole)
    whole_by_step = {r["step"]: r for r in whole_run if "loss" in r}
    rng = random.Random(0)
    aims = ["steps"] * 4 + ["save"] * 4
    rng.shuffle(aims)
    aims += ["eval"] * 2
    landed, resumable, before_commit = [], [], 0
    for index, aim in enumerate(aims):
        log = tmp_path / f"kill{index}.log"
        process = run_worker(broken, STEPS, DEVICES, "--delay", "0.02", "--checkpoint_every",
                              EVERY, "--phase_log", log, background=True)  # fmt: skip
        if not _kill_in(aim, process, log, broken, rng, eval_seconds):
            pytest.fail(f"kill {index} (aimed at {aim}): the worker ended first")
        landed.append(phase_at_death(log))
        step = _in_flight_save(log)
        before_commit += step is not None and not (broken / "checkpoints" / step).exists()
        resumable.append(max(finished_checkpoints(broken), default=0))
    _run_to_the_end(broken, "--dump", tmp_path / "broken.npz")

    runs = _runs(broken)
    assert len(runs) == KILLS + 1, f"{len(runs)} runs logged for {KILLS} kills and one rerun"
    starts = [int(run[0]["start_step"]) for run in runs[1:]]
    assert starts == resumable, f"restarts began at {starts}, the newest commits were {resumable}"
    differences = [
        line
        for index, run in enumerate(runs)
        for line in _differences(run, whole_by_step, f"run {index}")
    ]
    equal = sum(not _differences(run, whole_by_step, "") for run in runs[1:])
    counts = collections.Counter(landed)
    print(f"{equal} of {KILLS} restarts bitwise equal; kills landed: {counts['steps']} in steps, "
          f"{counts['save']} in saves ({before_commit} before Orbax's commit), "
          f"{counts['eval']} in evaluation, {counts['after']} after it; the evaluation "
          f"takes {eval_seconds:.2f} s; restarts began at {starts}")  # fmt: skip
    assert not differences, differences[:5]
    assert counts["steps"] and counts["save"] and counts["eval"], f"kills landed {landed}"
    whole_params, broken_params = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "broken.npz")
    assert sorted(whole_params) == sorted(broken_params)
    for name in whole_params:
        np.testing.assert_array_equal(whole_params[name], broken_params[name], err_msg=name)
