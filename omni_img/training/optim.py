"""Optimizer and learning-rate schedule from config (optax)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup to `optim.lr`, then cosine decay to `optim.lr * optim.min_lr_ratio`."""
    warmup = max(int(optim.warmup_steps), 0)
    decay_steps = max(num_steps - warmup, 1)
    cosine = optax.cosine_decay_schedule(
        init_value=optim.lr, decay_steps=decay_steps, alpha=optim.min_lr_ratio
    )
    if warmup == 0:
        return cosine
    ramp = optax.linear_schedule(0.0, optim.lr, warmup)
    return optax.join_schedules([ramp, cosine], boundaries=[warmup])


def make_optimizer(
    optim: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
    """Gradient clipping by global norm (when `optim.clip_norm > 0`), the optimizer, and
    zero updates for `optim.frozen` parameter prefixes."""
    schedule = learning_rate_schedule(optim, num_steps)
    if optim.name == "adamw":
        core = optax.adamw(
            schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay
        )
    elif optim.name == "adam":
        core = optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    else:  # "sgd"; the name was validated with the rest of the config
        core = optax.sgd(schedule, momentum=optim.b1)
    tx = core
    if optim.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm), core)
    frozen = tuple(optim.frozen)
    if frozen:
        tx = optax.chain(tx, zero_frozen_updates(frozen))
    return tx


def zero_frozen_updates(frozen: tuple[str, ...]) -> optax.GradientTransformation:
    """Zeroes the final update of every parameter whose path ("params/base/...") starts
    with one of `frozen`: after weight decay, so those parameters never change at all.

    A last stateless step rather than `optax.multi_transform`, so the optimizer state
    keeps the parameters' tree structure (and with it their shardings).
    """

    def is_frozen(path) -> bool:
        name = "/".join(str(getattr(key, "key", getattr(key, "name", key))) for key in path)
        return any(name.startswith(prefix) for prefix in frozen)

    def update(updates, state, params=None):
        del params
        zeroed = jax.tree_util.tree_map_with_path(
            lambda path, u: jnp.zeros_like(u) if is_frozen(path) else u, updates
        )
        return zeroed, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
