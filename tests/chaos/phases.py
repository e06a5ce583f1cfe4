"""What a training process was doing when it died: a log of phase changes it appends
as it runs, read back after a kill -9.

`log_phases(path)` (in the worker, before training) makes the tokenizer trainer write
one line per event, after its wall time: `save_start <step>` when a checkpoint save
starts, `save_sealed <step>` once the checkpointer counts it (Orbax committed it and
its digest is written), `eval_start` / `eval_end` around the final evaluation, `trained`
when training and evaluation returned. Each line is one unbuffered `write` to an
O_APPEND file, so a kill loses none that ran. `phase_at_death(path)` reads the log of
one process back.
"""

from __future__ import annotations

import functools
import os
import pathlib
import time

PHASES = ("steps", "save", "eval", "after")


def log_phases(path: str | os.PathLike) -> None:
    """Patch the checkpointer and the tokenizer's evaluation to log to `path`."""
    from omni_img.trainers import tokenizer
    from omni_img.training.checkpoint import Checkpointer

    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(event: str) -> None:
        os.write(descriptor, f"{time.time():.3f} {event}\n".encode())

    save, seal, evaluate = Checkpointer.save, Checkpointer._seal_pending, tokenizer.evaluate

    @functools.wraps(save)
    def logged_save(self, step, state, data_iterator=None):
        if step not in self.manager.all_steps() and not self._failed:
            self._seal_pending()  # what save does first: the previous save seals before
            log(f"save_start {step}")
        save(self, step, state, data_iterator)

    @functools.wraps(seal)
    def logged_seal(self):
        step = self._unsealed
        seal(self)
        if step is not None:
            log(f"save_sealed {step}")

    @functools.wraps(evaluate)
    def logged_evaluate(*args, **kwargs):
        log("eval_start")
        report = evaluate(*args, **kwargs)
        log("eval_end")
        return report

    Checkpointer.save, Checkpointer._seal_pending = logged_save, logged_seal
    tokenizer.evaluate = logged_evaluate
    train = tokenizer.train

    @functools.wraps(train)
    def logged_train(*args, **kwargs):
        report = train(*args, **kwargs)
        log("trained")
        return report

    tokenizer.train = logged_train


def events(path: pathlib.Path) -> list[str]:
    """The events of a log, without their times."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split(" ", 1)[1] for line in lines]


def seconds_between(path: pathlib.Path, first: str, last: str) -> float:
    """Wall seconds from the event `first` to the event `last` of one log."""
    times: dict[str, float] = {}
    for line in path.read_text().splitlines():
        stamp, event = line.split(" ", 1)
        times.setdefault(event, float(stamp))  # the first time each event happened
    return times[last] - times[first]


def phase_at_death(path: pathlib.Path) -> str:
    """One of PHASES for the process that wrote `path`: `save` while a save it started
    was not yet sealed (steps go on during an async save: the save is what a kill there
    tests), else `eval` between eval_start and eval_end, `after` once training returned,
    else `steps` (the loop, its logging and the reads of the next batch)."""
    lines = events(path)
    started = {line.split()[1] for line in lines if line.startswith("save_start ")}
    sealed = {line.split()[1] for line in lines if line.startswith("save_sealed ")}
    if started - sealed:
        return "save"
    if "trained" in lines:
        return "after"
    if "eval_start" in lines and "eval_end" not in lines:
        return "eval"
    return "after" if "eval_end" in lines else "steps"
