"""`fit`: the part of every stage's trainer that does not depend on the stage.

Given the mesh, a params initialiser, a loss and a data iterator, it builds the
optimizer, lays the state out on the mesh, jits the step, applies the resume order
and runs the loop. A trainer calls it between its stage-specific Data/Model setup
and its evaluation, so each trainer still reads top to bottom.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from omni_img.training.checkpoint import Checkpointer, restore_initial_state
from omni_img.training.data import batch_shardings, to_global_batch
from omni_img.training.loop import LoopResult, run_loop
from omni_img.training.metrics import MetricsWriter
from omni_img.training.optim import learning_rate_schedule, make_optimizer
from omni_img.training.state import create_sharded_state, state_shardings
from omni_img.training.step import LossFn, jit_train_step


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
    init_params: Callable,
    loss_fn: LossFn,
    example_batch: Mapping[str, np.ndarray],
    data_iterator,
    writer: MetricsWriter,
    hooks=(),
    description: str = "train",
) -> LoopResult:
    """Shard -> Step -> Restore -> Loop. Returns the loop's result (final state inside)."""
    # ---------------------------------------------------------------- Shard
    abstract, shardings, tx, schedule = abstract_train_state(config, init_params, mesh, rules)

    # ---------------------------------------------------------------- Step
    step_fn = jit_train_step(
        loss_fn, tx, schedule, config, mesh, shardings, batch_shardings(example_batch, mesh)
    )

    # ---------------------------------------------------------------- Restore
    checkpointer = Checkpointer(workdir, config.checkpoint)
    fresh = functools.partial(create_sharded_state, init_params, tx, mesh, rules, config.seed)
    state, origin = restore_initial_state(checkpointer, config, abstract, fresh, data_iterator)
    if jax.process_index() == 0:
        print(f"{description}: {origin}; mesh {dict(mesh.shape)}", flush=True)

    # ---------------------------------------------------------------- Loop
    from omni_img.sharding import mesh_context

    try:
        with mesh_context(mesh, rules):
            return run_loop(
                state=state,
                step_fn=step_fn,
                batches=data_iterator,
                to_device=lambda batch: to_global_batch(batch, mesh),
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
                description=description,
            )
    finally:
        checkpointer.close()


def restore_latest(config, workdir, init_params, mesh: Mesh, rules):
    """The latest checkpoint of `workdir` on `mesh` (any device count)."""
    abstract, _, _, _ = abstract_train_state(config, init_params, mesh, rules)
    checkpointer = Checkpointer(workdir, config.checkpoint)
    try:
        return checkpointer.restore(abstract)
    finally:
        checkpointer.close()


def finish_report(report: dict, result: LoopResult, writer: MetricsWriter, path: pathlib.Path):
    """Add the run's step count and timings to an evaluation report, log its scalars,
    close the writer and (process 0) write the report as JSON to `path`."""
    report.update(
        steps=int(jax.device_get(result.state.step)),
        compile_seconds=round(result.compile_seconds, 2),
        train_seconds=round(result.train_seconds, 2),
    )
    scalars = {f"eval/{k}": v for k, v in report.items() if isinstance(v, (int, float))}
    writer.write(report["steps"], scalars)
    writer.close()
    if jax.process_index() == 0:
        path.write_text(json.dumps(report, indent=2))
    return report
