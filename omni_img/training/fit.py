"""`fit`: the part of every stage's trainer that does not depend on the stage.

A stage describes its train step as a `StageStep` (a params initialiser, a loss and
the shapes of one batch), built from its config alone. Given that, the mesh and a
data iterator, `fit` builds the optimizer, lays the state out on the mesh, jits the
step, applies the resume order and runs the loop. A trainer calls it between its
stage-specific Data/Model setup and its evaluation, so each trainer still reads top
to bottom. `compile_train_step` compiles the same step ahead of time with no data and
no state in memory (`omni-img compile`, benchmarks).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from omni_img.errors import UserError
from omni_img.sharding import mesh_context
from omni_img.training.checkpoint import Checkpointer, restore_initial_state
from omni_img.training.corrupt_records import SkipCounter
from omni_img.training.data import batch_shardings, to_global_batch
from omni_img.training.loop import LoopResult, run_loop
from omni_img.training.metrics import MetricsWriter
from omni_img.training.optim import learning_rate_schedule, make_optimizer
from omni_img.training.state import create_sharded_state, state_shardings
from omni_img.training.step import LossFn, jit_train_step, skips_nonfinite


@dataclasses.dataclass(frozen=True)
class StageStep:
    """A stage's train step, from its config alone.

    `init_params(rng)` returns the (logically boxed) params; `loss_fn(params, batch,
    rng) -> (loss, metrics)`; `example_batch` holds host arrays with the shapes and
    dtypes of one global batch (their values are never used).
    """

    init_params: Callable
    loss_fn: LossFn
    example_batch: Mapping[str, np.ndarray]


def abstract_train_state(config, init_params, mesh: Mesh, rules):
    """(abstract state with shardings, sharding tree, optimizer, schedule)."""
    tx = make_optimizer(config.optim, config.num_steps)
    schedule = learning_rate_schedule(config.optim, config.num_steps)
    abstract, shardings = state_shardings(init_params, tx, mesh, rules)
    return abstract, shardings, tx, schedule


def fit(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    *,
    mesh: Mesh,
    rules,
    stage: StageStep,
    data_iterator,
    writer: MetricsWriter,
    hooks=(),
    minute_hooks=(),
    description: str = "train",
    prepare_batch: Callable[[dict], dict] | None = None,
) -> LoopResult:
    """Shard -> Step -> Restore -> Loop. Returns the loop's result (final state inside).

    `hooks` run every so many steps, `minute_hooks` every so many training minutes
    (see `run_loop`).

    `prepare_batch`, if given, maps each global batch (on device) to what the step
    takes, e.g. adds a frozen encoder's outputs; `stage.example_batch` describes its
    output.
    """
    # ---------------------------------------------------------------- Shard
    abstract, shardings, tx, schedule = abstract_train_state(config, stage.init_params, mesh, rules)

    # ---------------------------------------------------------------- Step
    step_fn = jit_train_step(
        stage.loss_fn,
        tx,
        schedule,
        config,
        mesh,
        shardings,
        batch_shardings(stage.example_batch, mesh),
    )

    # ---------------------------------------------------------------- Restore
    checkpointer = Checkpointer(workdir, config.checkpoint, num_steps=config.num_steps)
    fresh = functools.partial(create_sharded_state, stage.init_params, tx, mesh, rules, config.seed)
    state, origin = restore_initial_state(checkpointer, config, abstract, fresh, data_iterator)
    if jax.process_index() == 0:
        print(f"{description}: {origin}; mesh {dict(mesh.shape)}", flush=True)

    # ---------------------------------------------------------------- Loop
    corrupt = SkipCounter()
    try:
        with mesh_context(mesh, rules):
            result = run_loop(
                state=state,
                step_fn=step_fn,
                batches=data_iterator,
                to_device=functools.partial(
                    _to_device, mesh=mesh, prepare=prepare_batch, corrupt=corrupt
                ),
                num_steps=config.num_steps,
                checkpointer=checkpointer,
                data_iterator=data_iterator,
                writer=writer,
                log_every=config.log_every,
                examples_per_step=config.batch_size,
                profile_steps=config.profile_steps,
                profile_dir=str(workdir / "profile"),
                max_seconds=config.max_minutes * 60.0,
                every_step_hooks=tuple(hooks),
                minute_hooks=tuple(minute_hooks),
                description=description,
                skip_nonfinite=skips_nonfinite(config),
            )
    finally:
        checkpointer.close()
    result.corrupt_records_skipped = corrupt.total
    writer.write(int(jax.device_get(result.state.step)), {"corrupt_records_skipped": corrupt.total})
    if corrupt.total and jax.process_index() == 0:
        print(f"{description}: skipped {corrupt.total} corrupt records", flush=True)
    return result


def _to_device(batch, *, mesh: Mesh, prepare, corrupt: SkipCounter):
    global_batch = to_global_batch(corrupt.strip(batch), mesh)
    return global_batch if prepare is None else prepare(global_batch)


def compile_train_step(config, stage: StageStep, mesh: Mesh, rules):
    """The stage's train step lowered and compiled for `mesh`, from shapes only: no
    params, optimizer state or batch is ever allocated (an out-of-memory shows here)."""
    abstract, shardings, tx, schedule = abstract_train_state(config, stage.init_params, mesh, rules)
    in_batch = batch_shardings(stage.example_batch, mesh)
    step_fn = jit_train_step(stage.loss_fn, tx, schedule, config, mesh, shardings, in_batch)
    abstract_batch = {
        name: jax.ShapeDtypeStruct(
            np.shape(value), np.asarray(value).dtype, sharding=in_batch[name]
        )
        for name, value in stage.example_batch.items()
    }
    with mesh_context(mesh, rules):
        return step_fn.lower(abstract, abstract_batch).compile()


def restore_latest(config, workdir, init_params, mesh: Mesh, rules, step: int | None = None):
    """The latest checkpoint of `workdir` (or the one at `step`) on `mesh` (any device
    count)."""
    abstract, _, _, _ = abstract_train_state(config, init_params, mesh, rules)
    checkpointer = Checkpointer(workdir, config.checkpoint)
    try:
        if step is not None and step not in checkpointer.manager.all_steps():
            saved = ", ".join(map(str, sorted(checkpointer.manager.all_steps()))) or "none"
            raise UserError(f"{workdir} has no checkpoint at step {step} (saved steps: {saved})")
        return checkpointer.restore(abstract, step=step)
    finally:
        checkpointer.close()


def stopped_report(result: LoopResult, writer: MetricsWriter) -> dict | None:
    """For a run stopped by SIGTERM: close the writer and return a report that says so;
    None for a run that ended normally. A preempted job has seconds, not the minutes a
    final evaluation takes: its checkpoint is written, and the evaluation is left to the
    resumed run (no evaluation file is written, so nothing reads the run as finished)."""
    if not result.stopped_by_signal:
        return None
    writer.close()
    step = int(jax.device_get(result.state.step))
    print(f"stopped by SIGTERM at step {step}; checkpoint saved, rerun the command to resume")
    return {"stopped_by_signal": True, "steps": step}


def finish_report(report: dict, result: LoopResult, writer: MetricsWriter, path: pathlib.Path):
    """Add the run's step count and timings to an evaluation report, log its scalars,
    close the writer and (process 0) write the report as JSON to `path`."""
    report.update(
        steps=int(jax.device_get(result.state.step)),
        corrupt_records_skipped=result.corrupt_records_skipped,
        nonfinite_skipped=result.nonfinite_skipped,
        compile_seconds=round(result.compile_seconds, 2),
        train_seconds=round(result.train_seconds, 2),
    )
    scalars = {f"eval/{k}": v for k, v in report.items() if isinstance(v, (int, float))}
    writer.write(report["steps"], scalars)
    writer.close()
    if jax.process_index() == 0:
        path.write_text(json.dumps(report, indent=2))
    return report
