"""Checkpoints: Orbax, async, by steps and by minutes, with the data iterator.

Layout: `WORKDIR/checkpoints/<step>/{state,data,schedule}`. `state` is the TrainState;
`data` is the grain iterator position of every process (restorable onto another
process count, see `training.data_position`); `schedule` holds the `num_steps` the
learning-rate schedule was built for. Keeps the last `keep` checkpoints plus every
step that is a multiple of `keep_every`.

Resume order (see docs/training.md): the workdir's latest checkpoint, else
`config.resume_from` (another run's checkpoint: state and data position), else
`config.init_from` (params and EMA params only), else scratch. The first two refuse a
config whose `num_steps` differs from the checkpoint's: the schedule decays over
`num_steps`, so resuming with another value would silently change the learning rate.
A damaged latest step falls back to the newest one that restores (`training.restore`).

With `checkpoint.device_snapshot` (and `async_save`, in a one-process run) the loop's
part of a save is a copy of the state on its devices and the data iterator's position;
a background thread hands both to Orbax, whose per-array work on the calling thread would
otherwise stall the loop for a tenth to a third of a step (docs/performance.md,
checkpoint rows). The copy costs one more state's worth of device memory while a save is
in flight; the large presets turn it off.

A save counts once Orbax has committed it and its file digest is written
(`training.checkpoint_digest`): the loop asks after every step whether the async save
finished (`record_finished_saves`), and the next save, `wait` and `close` wait for it.
A save that fails (a full disk, an unwritable workdir) stops the run with one line
naming the checkpoint folder and the last good step; nothing saved before is touched.
"""

from __future__ import annotations

import json
import logging
import pathlib
import threading
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from omni_img.errors import UserError
from omni_img.training.checkpoint_digest import write_digest
from omni_img.training.restore import (
    check_same_schedule,
    one_line,
    restore_from,
    restore_newest,
)
from omni_img.training.state import TrainState

_replica_parallel: bool | None = None  # Orbax's default until set here


def use_replica_parallel_saves(enabled: bool) -> None:
    """Set how Orbax saves jax.Arrays (config.checkpoint.replica_parallel). Orbax keeps
    its array handler in a process-wide registry, so this applies to every save of the
    process; the checkpoint format is the same either way."""
    global _replica_parallel
    if _replica_parallel == enabled:
        return
    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=enabled)
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Orbax warns that it overrides its own default
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        absl_logger.setLevel(level)
    _replica_parallel = enabled


@jax.jit
def _device_copy(tree):
    """`tree` in new buffers on the same devices and shardings."""
    return jax.tree.map(jnp.copy, tree)


def _snapshot(state: TrainState) -> TrainState:
    """A copy of `state` that the loop's next step cannot take away (it donates the
    state). A fully replicated array is saved from one replica, so (in the one process
    of a background save) one replica is all that is copied: on a host of 8 fake CPU
    devices an eighth of the bytes, in about a third of the time of copying every array
    whole. Other arrays are copied whole, on their devices."""
    leaves, treedef = jax.tree.flatten(state)

    def one_replica_enough(x) -> bool:
        return x.sharding.is_fully_replicated and len(x.sharding.device_set) > 1

    picks = [one_replica_enough(x) for x in leaves]
    replicas = iter(jax.device_put(
        [x.addressable_shards[0].data for x, pick in zip(leaves, picks) if pick], may_alias=False
    ))  # fmt: skip
    wholes = iter(_device_copy([x for x, pick in zip(leaves, picks) if not pick]))
    copies = [next(replicas) if pick else next(wholes) for pick in picks]
    return jax.tree.unflatten(treedef, copies)


class _FrozenPosition:
    """A data iterator's position taken now, for a save written later by another thread
    (grain's handler asks the iterator for its state only when it writes the file, and
    by then the loop has moved the iterator on). Writes what grain writes."""

    def __init__(self, iterator):
        state = iterator.get_state()
        self._state = state if isinstance(state, bytes) else json.dumps(state, indent=4).encode()

    def get_state(self) -> bytes:
        return self._state


class Checkpointer:
    """Owns the CheckpointManager of one workdir and decides when to save."""

    def __init__(
        self,
        workdir: str | pathlib.Path,
        options: ml_collections.ConfigDict,
        num_steps: int | None = None,
    ):
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.num_steps = num_steps  # saved beside each state when given
        self.every_steps = int(options.every_steps)
        self.every_seconds = float(options.every_minutes) * 60.0
        self._last_save_time = time.monotonic()
        # One process only: Orbax's save synchronises the processes, and doing that in a
        # thread beside the loop's own collectives can order them differently on each
        # process (two-process runs hung so).
        self.in_background = (
            bool(options.async_save)
            and bool(options.device_snapshot)
            and jax.process_count() == 1
        )
        self._worker: threading.Thread | None = None
        self._worker_error: Exception | None = None
        use_replica_parallel_saves(bool(options.replica_parallel))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=int(options.keep) or None,
                keep_period=int(options.keep_every) or None,
                enable_async_checkpointing=bool(options.async_save),
                create=True,
            ),
        )

        self.last_good = self.manager.latest_step()  # the newest step that counts
        self._unsealed: int | None = None  # saved, not yet known to be committed
        self._failed = False

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def due_by_steps(self, step: int) -> bool:
        """Whether `step` is a multiple of the save interval (the same on every process)."""
        return self.every_steps > 0 and step % self.every_steps == 0

    def due_by_time(self) -> bool:
        """Whether `every_minutes` passed since the last save (this process's clock: a
        multi-process loop must agree on it before acting, see `training.loop`)."""
        return self.every_seconds > 0 and (
            time.monotonic() - self._last_save_time >= self.every_seconds
        )

    def save(self, step: int, state: TrainState, data_iterator=None) -> None:
        """Start an (async) save of `state` and the iterator position at `step`."""
        if self._failed:
            return
        self._seal_pending()  # Orbax would wait for the previous save here anyway
        if step in self.manager.all_steps():
            return
        if self.in_background:
            state = _snapshot(state)
            data_iterator = None if data_iterator is None else _FrozenPosition(data_iterator)
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if self.num_steps is not None:
            items["schedule"] = ocp.args.JsonSave({"num_steps": int(self.num_steps)})
        if self.in_background:
            self._worker = threading.Thread(
                target=self._save_in_background, args=(step, items), name=f"save-{step}"
            )
            self._worker.start()
        else:
            try:
                self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            except Exception as error:
                self._fail(step, error)
        self._unsealed = step
        self._last_save_time = time.monotonic()
        if not self._saving():  # a synchronous save
            self._seal_pending()

    def _save_in_background(self, step: int, items: dict) -> None:
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            self.manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 - raised in the loop's thread at sealing
            self._worker_error = error

    def _saving(self) -> bool:
        worker_busy = self._worker is not None and self._worker.is_alive()
        return worker_busy or self.manager.is_saving_in_progress()

    def newest_saved(self) -> int | None:
        """The step of the newest save started (it may still be in flight)."""
        return self._unsealed if self._unsealed is not None else self.last_good

    def record_finished_saves(self) -> None:
        """Count an async save that finished since the last call (cheap: no waiting)."""
        if self._unsealed is not None and not self._saving():
            self._seal_pending()

    def restore(self, abstract_state: TrainState, data_iterator=None, step: int | None = None):
        """Restore onto the shardings in `abstract_state` (any mesh); moves the iterator.
        Without `step`, the newest step that restores (damaged ones are left in place)."""
        return restore_from(self.manager, abstract_state, data_iterator, step, say=_say)

    def wait(self) -> None:
        self._seal_pending()

    def close(self) -> None:
        if self._failed:  # already reported: leave Orbax's half-written folder alone
            try:
                if self._worker is not None:
                    self._worker.join()
                self.manager.close()
            except Exception:  # noqa: BLE001 - the first error is the one to show
                pass
            return
        self._seal_pending()
        self.manager.close()

    def _seal_pending(self) -> None:
        """Wait for the save in flight, check Orbax committed it, write its digest."""
        step, self._unsealed = self._unsealed, None
        try:
            if self._worker is not None:
                self._worker.join()
                self._worker, error, self._worker_error = None, self._worker_error, None
                if error is not None:
                    raise error
            self.manager.wait_until_finished()
            if step is None:
                return
            step_dir = self.directory / str(step)
            if not step_dir.is_dir():
                raise OSError(f"Orbax did not commit {step_dir}")
            if jax.process_index() == 0:
                write_digest(step_dir)
        except Exception as error:
            self._fail(step, error)
        self.last_good = step

    def _fail(self, step: int | None, error: Exception):
        self._failed = True
        last = f"step {self.last_good}" if self.last_good is not None else "none yet"
        raise CheckpointSaveError(
            f"saving the checkpoint of step {step} to {self.directory} failed "
            f"({one_line(error)}); the last good checkpoint is {last}, untouched"
        ) from None


class CheckpointSaveError(UserError):
    """A save did not complete: a full disk, an unwritable folder."""


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def _manager_for(path: str) -> tuple[ocp.CheckpointManager, int | None]:
    """A read-only manager for a workdir, its checkpoints/ folder, or one step folder."""
    location = pathlib.Path(path).expanduser().absolute()
    if not location.exists():
        raise UserError(f"checkpoint path does not exist: {path}")
    step = None
    if (location / "checkpoints").is_dir():
        location = location / "checkpoints"
    elif location.name.isdigit() and (location / "state").is_dir():
        step, location = int(location.name), location.parent
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    return ocp.CheckpointManager(location, options=options), step


def restore_initial_state(
    checkpointer: Checkpointer,
    config: ml_collections.ConfigDict,
    abstract_state: TrainState,
    fresh_state,
    data_iterator,
) -> tuple[TrainState, str]:
    """Apply the resume order; returns (state, a sentence saying where it came from).

    `fresh_state` is a zero-argument callable returning a newly initialised state,
    called only when needed.
    """
    if checkpointer.latest_step() is not None:
        state, step = restore_newest(
            checkpointer.manager,
            abstract_state,
            data_iterator,
            num_steps=config.num_steps,
            where="this workdir",
            move_damaged=True,
            say=_say,
        )
        checkpointer.last_good = step
        return state, f"resumed from this workdir at step {int(jax.device_get(state.step))}"
    if config.resume_from:
        manager, step = _manager_for(config.resume_from)
        if step is not None:
            check_same_schedule(manager, step, config.num_steps, config.resume_from)
        walk = dict(num_steps=config.num_steps, where=config.resume_from, say=_say)
        state = restore_from(manager, abstract_state, data_iterator, step, **walk)
        return state, f"resumed from {config.resume_from} at step {int(jax.device_get(state.step))}"
    state = fresh_state()
    if config.init_from:
        manager, step = _manager_for(config.init_from)
        loaded = restore_from(manager, abstract_state, None, step, say=_say)
        state = state.replace(params=loaded.params, ema_params=loaded.ema_params)
        return state, f"initialised params from {config.init_from}"
    return state, "started from scratch"
