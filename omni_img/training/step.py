"""The train step: a pure function of (state, batch), shared by every stage.

A stage supplies `loss_fn(params, batch, rng) -> (loss, metrics)`; the step adds
gradient accumulation, the optimizer update, EMA and the norms we log.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from omni_img.sharding import replicated
from omni_img.training.state import TrainState

Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _split_micro_batches(batch: Batch, grad_accum: int) -> Batch:
    """(B, ...) -> (grad_accum, B / grad_accum, ...), strided so every device keeps its rows.

    Micro-batch i takes rows i, i + grad_accum, ...: with the batch axis sharded over
    devices, each device contributes equally to every micro-batch and nothing moves.
    """

    def split(x):
        return jnp.swapaxes(x.reshape(-1, grad_accum, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: LossFn, params, batch: Batch, rng: jax.Array, grad_accum: int):
    """Mean loss, metrics and gradients over `grad_accum` equal micro-batches.

    With a per-example-mean loss this equals one step on the whole batch (to fp32
    rounding), at 1/grad_accum of the activation memory.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        (loss, metrics), grads = grad_fn(params, batch, rng)
        return loss, metrics, grads

    micro_batches = _split_micro_batches(batch, grad_accum)
    rngs = jax.random.split(rng, grad_accum)

    def body(carry, inputs):
        micro_batch, micro_rng = inputs
        (loss, metrics), grads = grad_fn(params, micro_batch, micro_rng)
        return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

    zeros = jax.tree.map(
        jnp.zeros_like,
        jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro_batches), rng)),
    )
    (loss, metrics), grads = zeros
    totals, _ = jax.lax.scan(body, (loss, metrics, grads), (micro_batches, rngs))
    return jax.tree.map(lambda total: total / grad_accum, totals)


def ema_decay_at(step: jax.Array, ema_decay: float) -> jax.Array:
    """The EMA's decay after `step` updates: (1 + step) / (10 + step), capped at `ema_decay`.

    A fixed decay of 0.999 keeps 0.999**480 = 62 % of the random initialisation in the
    averaged weights after 480 steps, so a short run samples from mostly untrained
    weights (the main job drew blank squares from them). Ramping the decay up lets
    the average follow the weights early and settle to `ema_decay` later (0.999 from
    step 8,991 on).
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum: int,
    ema_decay: float,
    skip_nonfinite: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update. Returns the new state and scalar metrics.

    `skip_nonfinite`: a batch whose loss or gradient norm is NaN or infinite leaves the
    params, optimizer state and EMA as they were (the step count and the rng advance,
    so later batches see what they would have); `nonfinite_skipped` is 1 for it."""
    rng, step_rng = jax.random.split(state.rng)
    loss, metrics, grads = accumulate_gradients(loss_fn, state.params, batch, step_rng, grad_accum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay_at(state.step, ema_decay)
    ema_params = jax.tree.map(
        lambda ema, new: decay * ema + (1.0 - decay) * new, state.ema_params, params
    )
    metrics = {
        **metrics,
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "update_norm": optax.tree.norm(updates),
        "learning_rate": schedule(state.step),
    }
    if skip_nonfinite:
        finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])

        def keep_if_not_finite(new, old):
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        params = keep_if_not_finite(params, state.params)
        opt_state = keep_if_not_finite(opt_state, state.opt_state)
        ema_params = keep_if_not_finite(ema_params, state.ema_params)
        metrics["nonfinite_skipped"] = 1.0 - finite.astype(jnp.float32)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params, rng=rng
    )
    return new_state, metrics


def skips_nonfinite(config) -> bool:
    return config.nonfinite == "skip"


def jit_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    config,
    mesh,
    state_shardings,
    batch_shardings,
):
    """`train_step` jitted with explicit shardings and the state donated."""
    step = functools.partial(
        train_step,
        loss_fn=loss_fn,
        tx=tx,
        schedule=schedule,
        grad_accum=config.grad_accum,
        ema_decay=config.ema_decay,
        skip_nonfinite=skips_nonfinite(config),
    )
    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=0,
    )
