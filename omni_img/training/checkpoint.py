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
"""

from __future__ import annotations

import logging
import pathlib
import time

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from omni_img.errors import UserError
from omni_img.training.data_position import restore_position
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
        use_replica_parallel_saves(bool(options.get("replica_parallel", False)))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=int(options.keep) or None,
                keep_period=int(options.keep_every) or None,
                enable_async_checkpointing=bool(options.async_save),
                create=True,
            ),
        )

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
        if step in self.manager.all_steps():
            return
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if self.num_steps is not None:
            items["schedule"] = ocp.args.JsonSave({"num_steps": int(self.num_steps)})
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._last_save_time = time.monotonic()

    def restore(self, abstract_state: TrainState, data_iterator=None, step: int | None = None):
        """Restore onto the shardings in `abstract_state` (any mesh); moves the iterator."""
        return restore_from(self.manager, abstract_state, data_iterator, step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_from(manager, abstract_state, data_iterator=None, step=None) -> TrainState:
    step = manager.latest_step() if step is None else step
    if step is None:
        raise UserError(f"no checkpoint found in {manager.directory}")
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    if data_iterator is not None:  # not grain's restore: it needs the same process count
        restore_position(manager.directory / str(step) / "data", data_iterator)
    return restored["state"]


def saved_num_steps(manager, step: int) -> int | None:
    """The `num_steps` the checkpoint at `step` was trained for (None: saved before
    checkpoints recorded it)."""
    if not (manager.directory / str(step) / "schedule").exists():
        return None
    args = ocp.args.Composite(schedule=ocp.args.JsonRestore())
    return int(manager.restore(step, args=args)["schedule"]["num_steps"])


def check_same_schedule(manager, step: int | None, num_steps: int, where: str) -> None:
    """Refuse to resume a run whose learning-rate schedule would change."""
    step = manager.latest_step() if step is None else step
    saved = None if step is None else saved_num_steps(manager, step)
    if saved is not None and saved != num_steps:
        raise UserError(
            f"the checkpoint at step {step} in {where} was trained with num_steps={saved}, "
            f"but this run has num_steps={num_steps}: resuming would change the "
            f"learning-rate schedule; keep num_steps={saved}, or start a new workdir "
            f"with config.init_from"
        )


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
        check_same_schedule(checkpointer.manager, None, config.num_steps, "this workdir")
        state = checkpointer.restore(abstract_state, data_iterator)
        return state, f"resumed from this workdir at step {int(jax.device_get(state.step))}"
    if config.resume_from:
        manager, step = _manager_for(config.resume_from)
        check_same_schedule(manager, step, config.num_steps, config.resume_from)
        state = restore_from(manager, abstract_state, data_iterator, step)
        return state, f"resumed from {config.resume_from} at step {int(jax.device_get(state.step))}"
    state = fresh_state()
    if config.init_from:
        manager, step = _manager_for(config.init_from)
        loaded = restore_from(manager, abstract_state, None, step)
        state = state.replace(params=loaded.params, ema_params=loaded.ema_params)
        return state, f"initialised params from {config.init_from}"
    return state, "started from scratch"
