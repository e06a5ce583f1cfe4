"""Restore the newest checkpoint that restores: a damaged latest step falls back.

A step counts as saved once Orbax has committed it (on a local disk: its temporary
`<step>.orbax-checkpoint-tmp-*` folder renamed to `<step>/`; Orbax's `all_steps` lists
only those), so a run killed during an async save resumes from the step before. A
committed step can still be damaged later (a dying disk, a truncated copy): restoring
it checks, in order, its file digest (`training.checkpoint_digest`), the `num_steps` it
was trained for, the shape and dtype of every array against what this run expects
(Orbax casts a dtype silently), the arrays themselves and the data iterator position.
The first failure is the step's reason, said in one line; the next older step is tried.
A resuming run moves the damaged steps it passed over to `checkpoints_damaged/` beside
`checkpoints/` (never deleted: a new save may reuse their step numbers); a reader
(export, another stage) leaves them. If no step restores, a one-line UserError names the
directory and every step tried, and nothing is moved.

With several processes each attempt's outcome is agreed (one failing process fails the
step on all), and only process 0 moves folders.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from omni_img.errors import UserError
from omni_img.training.agreement import agree_any
from omni_img.training.checkpoint_digest import digest_problem
from omni_img.training.data_position import restore_position

DAMAGED_FOLDER = "checkpoints_damaged"


class ScheduleMismatch(UserError):
    """The checkpoint restores, but was trained for another `num_steps`."""


@dataclasses.dataclass(frozen=True)
class StepFailure:
    step: int
    reason: str


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line (Orbax's and TensorStore's run to many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def step_dir(manager, step: int) -> pathlib.Path:
    """The folder of a committed step (Orbax's manager names it with an epath)."""
    return pathlib.Path(manager.directory) / str(step)


def saved_num_steps(manager, step: int) -> int | None:
    """The `num_steps` the checkpoint at `step` was trained for (None: saved before
    checkpoints recorded it)."""
    if not (step_dir(manager, step) / "schedule").exists():
        return None
    args = ocp.args.Composite(schedule=ocp.args.JsonRestore())
    return int(manager.restore(step, args=args)["schedule"]["num_steps"])


def check_same_schedule(manager, step: int | None, num_steps: int, where: str) -> None:
    """Refuse to resume a run whose learning-rate schedule would change."""
    step = manager.latest_step() if step is None else step
    saved = None if step is None else saved_num_steps(manager, step)
    if saved is not None and saved != num_steps:
        raise ScheduleMismatch(
            f"the checkpoint at step {step} in {where} was trained with num_steps={saved}, "
            f"but this run has num_steps={num_steps}: resuming would change the "
            f"learning-rate schedule; keep num_steps={saved}, or start a new workdir "
            f"with config.init_from"
        )


def _path_name(path) -> str:
    """A pytree path as 'a/b/0', the same for a dataclass field and the dict key Orbax
    saves it under."""
    parts = []
    for key in path:
        for attribute in ("name", "key", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
    return "/".join(parts)


def _layouts(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        _path_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype).name)
        for path, leaf in leaves
        if getattr(leaf, "shape", None) is not None and getattr(leaf, "dtype", None) is not None
    }


def layout_mismatch(manager, step: int, abstract_state) -> str | None:
    """The first array whose saved shape or dtype differs from this run's (None: all
    agree). Arrays only one side has are left to Orbax's own structure check."""
    from etils import epath  # Orbax's path type

    metadata = ocp.StandardCheckpointHandler().metadata(
        epath.Path(step_dir(manager, step) / "state")
    )
    saved = _layouts(getattr(metadata, "tree", metadata))
    wanted = _layouts(abstract_state)
    for name in sorted(saved.keys() & wanted.keys()):
        if saved[name] != wanted[name]:
            (saved_shape, saved_dtype), (shape, dtype) = saved[name], wanted[name]
            return (
                f"{name} was saved as {saved_dtype}{list(saved_shape)}, "
                f"this run expects {dtype}{list(shape)}"
            )
    return None


def restore_step(manager, step: int, abstract_state, data_iterator=None):
    """Restore one step (state, then the iterator position); raises on any damage."""
    folder = step_dir(manager, step)
    if (problem := digest_problem(folder)) is not None:
        raise ValueError(problem)
    if (problem := layout_mismatch(manager, step, abstract_state)) is not None:
        raise ValueError(problem)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    if data_iterator is not None:  # not grain's restore: it needs the same process count
        restore_position(folder / "data", data_iterator)
    return restored["state"]


def _attempt(manager, step, abstract_state, data_iterator, num_steps, where):
    """(state, None) if `step` restores, else (None, reason). A schedule mismatch is
    not damage: it is raised, since an older step would only hide it."""
    try:
        if num_steps is not None:
            check_same_schedule(manager, step, num_steps, where)
        return restore_step(manager, step, abstract_state, data_iterator), None
    except ScheduleMismatch:
        raise
    except Exception as error:  # any failure to read the step is its damage
        return None, one_line(error)


def set_aside(manager, steps: list[int]) -> list[pathlib.Path]:
    """Move damaged step folders to `checkpoints_damaged/<step>[-n]` (process 0);
    returns where they went. The manager forgets them."""
    moved = []
    target_root = pathlib.Path(manager.directory).parent / DAMAGED_FOLDER
    for step in steps:
        target = target_root / str(step)
        suffix = 1
        while target.exists():
            suffix += 1
            target = target_root / f"{step}-{suffix}"
        moved.append(target)
        if jax.process_index() == 0:
            target_root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(step_dir(manager, step)), str(target))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("omni_img_checkpoints_set_aside")
    manager.reload()
    return moved


def restore_newest(
    manager,
    abstract_state,
    data_iterator=None,
    *,
    num_steps: int | None = None,
    where: str = "",
    move_damaged: bool = False,
    say: Callable[[str], None] = print,
):
    """(state, step) of the newest step of `manager` that restores, trying older ones
    in turn; each failure is said in one line. UserError if none restores."""
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise UserError(f"no checkpoint found in {manager.directory}")
    failures: list[StepFailure] = []
    for index, step in enumerate(steps):
        state, reason = _attempt(manager, step, abstract_state, data_iterator, num_steps, where)
        (failed,) = agree_any((reason is not None,))
        if not failed:
            if failures and move_damaged:
                moved = set_aside(manager, [f.step for f in failures])
                say(f"moved the damaged step{'s' if len(moved) > 1 else ''} to "
                    f"{', '.join(map(str, moved))}")  # fmt: skip
            return state, step
        reason = reason or "another process could not restore it"
        failures.append(StepFailure(step, reason))
        then = f"trying step {steps[index + 1]}" if index + 1 < len(steps) else "no older step"
        say(f"checkpoint step {step} in {manager.directory} does not restore: {reason}; {then}")
    tried = "; ".join(f"step {f.step}: {f.reason}" for f in failures)
    raise UserError(f"no checkpoint in {manager.directory} restores (tried {tried})")


def restore_from(manager, abstract_state, data_iterator=None, step=None, **walk):
    """The state at `step` (one try), or with `step=None` the newest that restores."""
    if step is None:
        state, _ = restore_newest(manager, abstract_state, data_iterator, **walk)
        return state
    try:
        return restore_step(manager, step, abstract_state, data_iterator)
    except Exception as error:
        raise UserError(
            f"checkpoint step {step} in {manager.directory} does not restore: {one_line(error)}"
        ) from None
