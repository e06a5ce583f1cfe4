"""The training loop shared by every stage's trainer.

The loop dispatches step n+1 before it reads step n's metrics back to the host,
so the device never waits on Python. Compilation is done ahead of the loop and
timed on its own. A non-finite loss or gradient norm stops the run with one line
naming the step, and a save never writes such a state: before a save the loop reads
that step's loss back first. With `config.nonfinite="skip"` the step keeps the state
of the step before instead (`training.step`) and the loop counts the skipped batches
(`nonfinite_skipped` in the metrics). SIGTERM
(a preemption) and normal exit both write a final checkpoint. Each run logs the step
it starts from (`start_step`: 0 from scratch, else the step it resumed at) and, when
it ends, how many steps it ran (`steps_run`), so a resume is told from a restart.

Decisions that depend on a clock or a signal (stop on SIGTERM, stop when the time
budget is spent, save because `every_minutes` passed) differ between processes, but
saving and stepping are collective: a process that stops one step before the others
would leave them waiting forever. With several processes such decisions are taken
only every `log_every` steps and agreed with one host all-gather (any process asking
means all act); a single process decides at every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from omni_img.config.validation import parse_profile_steps
from omni_img.errors import UserError
from omni_img.sharding import unsharded
from omni_img.training.agreement import agree_any
from omni_img.training.checkpoint import Checkpointer
from omni_img.training.metrics import MetricsWriter
from omni_img.training.state import TrainState

__all__ = ["LoopResult", "NonFiniteLossError", "agree_any", "run_loop"]


class NonFiniteLossError(UserError):
    """The loss or the gradients became NaN or infinite."""


@dataclasses.dataclass
class _NonFiniteWatch:
    """How the loop treats a step whose loss or gradient norm is not finite."""

    skip: bool  # the step kept the previous state (config.nonfinite="skip"): count it
    checkpointer: Checkpointer | None
    skipped: int = 0

    def check(self, step: int, metrics) -> float:
        """The step's loss; raises NonFiniteLossError in stop mode."""
        names = [n for n in ("loss", "grad_norm", "nonfinite_skipped") if n in metrics]
        values = dict(zip(names, map(float, jax.device_get([metrics[n] for n in names]))))
        if self.skip:
            self.skipped += int(values.get("nonfinite_skipped", 0.0) > 0)
            return values["loss"]
        loss, grad_norm = values["loss"], values.get("grad_norm", 0.0)
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return loss
        raise NonFiniteLossError(
            f"non-finite loss {loss} (gradient norm {grad_norm}) at step {step}; stopped "
            f"without saving step {step}: {self._last_checkpoint()}; a rerun reads the "
            f"same batch, so set config.nonfinite=skip to skip batches like it"
        )

    def _last_checkpoint(self) -> str:
        saved = None if self.checkpointer is None else self.checkpointer.newest_saved()
        return "no checkpoint saved yet" if saved is None else f"the last checkpoint is {saved}"

    def before_save(self, step: int, metrics) -> None:
        """In stop mode, check the step about to be saved now, not one step later."""
        if not self.skip:
            self.check(step, metrics)


@dataclasses.dataclass
class LoopResult:
    state: TrainState
    steps_run: int
    compile_seconds: float
    train_seconds: float  # wall time of the loop, hooks included
    train_minutes: float = 0.0  # training time alone, as minute hooks count it
    stopped_by_signal: bool = False
    nonfinite_skipped: int = 0  # batches whose update was skipped (config.nonfinite="skip")
    corrupt_records_skipped: int = 0  # set by `fit` (training.corrupt_records)


MinuteHook = Callable[..., Mapping[str, float] | None]  # fn(state, *, train_minutes)


class _TrainingClock:
    """Training time since `start` without the time spent in hooks, and which minute
    marks (one list of marks per minute hook: every `minutes`) have been passed."""

    def __init__(self, start: float, every_minutes: list[float]):
        self.start, self.excluded = start, 0.0
        self.every = every_minutes
        self.next_mark = list(every_minutes)

    def minutes(self) -> float:
        return (time.perf_counter() - self.start - self.excluded) / 60.0

    def marks_due(self) -> tuple[bool, ...]:
        now = self.minutes()
        return tuple(every > 0 and now >= mark for every, mark in zip(self.every, self.next_mark))

    def passed(self, marks) -> None:
        for i, mark in enumerate(marks):
            while mark and self.next_mark[i] <= self.minutes():
                self.next_mark[i] += self.every[i]

    @contextlib.contextmanager
    def paused(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - start


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """Sets the event on SIGTERM instead of dying, so the loop can checkpoint first."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_loop(
    *,
    state: TrainState,
    step_fn,
    batches: Iterator[Mapping[str, np.ndarray]],
    to_device: Callable[[Mapping[str, np.ndarray]], dict],
    num_steps: int,
    checkpointer: Checkpointer | None,
    data_iterator=None,
    writer: MetricsWriter | None = None,
    log_every: int = 10,
    examples_per_step: int = 0,
    profile_steps: str = "",
    profile_dir: str = "",
    max_seconds: float = 0.0,
    every_step_hooks: tuple[
        tuple[int, Callable[[TrainState], Mapping[str, float] | None]], ...
    ] = (),
    minute_hooks: tuple[tuple[float, MinuteHook], ...] = (),
    description: str = "train",
    skip_nonfinite: bool = False,
) -> LoopResult:
    """Run `step_fn` from `state.step` to `num_steps`; return the final state.

    `step_fn` is the jitted train step; it is lowered and compiled here on the first
    batch. `every_step_hooks` are `(every, fn(state) -> scalars)` pairs (evals,
    sample grids) run on host after the step that is a multiple of `every`.
    `minute_hooks` are `(minutes, fn(state, train_minutes) -> scalars)` pairs run each
    time another `minutes` of training time has passed: time spent in hooks does not
    count, so two runs' marks compare at equal training minutes (learning curves).
    `max_seconds > 0` stops early (with a checkpoint) once the time budget is spent.
    `skip_nonfinite`: the step skips non-finite updates itself; count them, do not stop.
    """
    start_step = int(jax.device_get(state.step))
    profile = parse_profile_steps(profile_steps)
    first_batch = to_device(next(batches))
    compile_start = time.perf_counter()
    compiled = step_fn.lower(state, first_batch).compile()
    compile_seconds = time.perf_counter() - compile_start
    if writer is not None:  # start_step > 0: a resumed run, and the step it resumed from
        writer.write(start_step, {"compile_seconds": compile_seconds, "start_step": start_step})

    pending: tuple[int, dict] | None = None
    watch = _NonFiniteWatch(skip=skip_nonfinite, checkpointer=checkpointer)
    single_process = jax.process_count() == 1
    stop_requested = False
    tracing = False
    batch = first_batch
    step = start_step
    train_start = time.perf_counter()
    window_start, window_steps = train_start, 0
    clock = _TrainingClock(train_start, [minutes for minutes, _ in minute_hooks])
    bar = tqdm(
        total=num_steps,
        initial=start_step,
        desc=description,
        dynamic_ncols=True,
        disable=jax.process_index() != 0,
    )
    with _stop_on_sigterm() as stop:
        while step < num_steps:
            if profile and step == profile[0]:
                jax.profiler.start_trace(profile_dir)
                tracing = True
            state, metrics = compiled(state, batch)
            step += 1
            window_steps += 1
            if tracing and step == profile[1] + 1:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                tracing = False
            # Read back the previous step's metrics while this one runs.
            if pending is not None:
                _report(
                    pending, writer, bar, log_every, window_start, window_steps,
                    examples_per_step, watch,
                )  # fmt: skip
                if pending[0] % log_every == 0:
                    window_start, window_steps = time.perf_counter(), 0
            pending = (step, metrics)
            bar.update(1)
            due = [hook for every, hook in every_step_hooks if every > 0 and step % every == 0]
            save_by_time, stop_requested, out_of_time, *marks = _timed_decisions(
                step, log_every, single_process, checkpointer, stop, max_seconds, clock
            )
            due += [
                functools.partial(hook, train_minutes=clock.minutes())
                for (_, hook), mark in zip(minute_hooks, marks, strict=True)
                if mark
            ]
            clock.passed(marks)
            with clock.paused():
                for hook in due:
                    with unsharded():  # hooks evaluate host copies of the params
                        scalars = hook(state)
                    if scalars and writer is not None:
                        writer.write(step, scalars)
            # Save before drawing the next batch: the saved iterator position must
            # match the saved state, so resume continues on the exact next batch.
            if checkpointer is not None and (checkpointer.due_by_steps(step) or save_by_time):
                watch.before_save(step, metrics)  # never save what a non-finite step made
                checkpointer.save(step, state, data_iterator)
            if checkpointer is not None:
                checkpointer.record_finished_saves()
            if step >= num_steps or stop_requested or out_of_time:
                break
            batch = to_device(next(batches))
        if tracing:  # the run stopped (time, signal, last step) inside the traced range
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
        if pending is not None:
            _report(pending, writer, bar, 1, window_start, window_steps, examples_per_step, watch)
        if checkpointer is not None:
            checkpointer.save(step, state, data_iterator)
            checkpointer.wait()
        if writer is not None:  # how many steps this process ran, not the run's total
            summary = {"steps_run": step - start_step}
            if skip_nonfinite:
                summary["nonfinite_skipped_total"] = watch.skipped
            writer.write(step, summary)
        stopped_by_signal = stop_requested
    bar.close()
    return LoopResult(
        state=state,
        steps_run=step - start_step,
        compile_seconds=compile_seconds,
        train_seconds=time.perf_counter() - train_start,
        train_minutes=clock.minutes(),
        stopped_by_signal=stopped_by_signal,
        nonfinite_skipped=watch.skipped,
    )


def _timed_decisions(step, log_every, single_process, checkpointer, stop, max_seconds, clock):
    """(save because every_minutes passed, SIGTERM seen, time budget spent, then one flag
    per minute hook: its mark passed), the same on every process: several processes
    decide only every `log_every` steps, together. The budget counts wall time."""
    marks = clock.marks_due()
    if not (single_process or step % log_every == 0):
        return (False, False, False, *(False for _ in marks))
    local = (
        checkpointer is not None and checkpointer.due_by_time(),
        stop.is_set(),
        max_seconds > 0 and time.perf_counter() - clock.start >= max_seconds,
        *marks,
    )
    return local if single_process else agree_any(local)


def _report(pending, writer, bar, log_every, window_start, window_steps, examples_per_step, watch):
    step, metrics = pending
    loss = watch.check(step, metrics)
    if step % log_every:
        return
    host = {name: np.asarray(value) for name, value in jax.device_get(metrics).items()}
    elapsed = max(time.perf_counter() - window_start, 1e-9)
    steps_per_second = window_steps / elapsed
    host["steps_per_second"] = steps_per_second
    if examples_per_step:
        host["examples_per_second"] = steps_per_second * examples_per_step
    if watch.skip:
        host["nonfinite_skipped_total"] = watch.skipped
    bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{steps_per_second:.2f}")
    if writer is not None:
        writer.write(step, host)
