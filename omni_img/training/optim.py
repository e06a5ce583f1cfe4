"""Optimizer and learning-rate schedule from config (optax)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
import optax.contrib


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
    elif optim.name == "muon":
        core = optax.contrib.muon(
            schedule, beta=0.95, weight_decay=optim.weight_decay,
            muon_weight_dimension_numbers=muon_dimensions,
            # Update RMS matched to AdamW's, so one learning rate and weight decay serve
            # both the orthogonalised kernels and the Adam-trained rest (Liu et al. 2025).
            consistent_rms=0.2,
            adam_b1=optim.b1, adam_b2=optim.b2, adam_weight_decay=optim.weight_decay,
        )  # fmt: skip
    else:  # "sgd"; the name was validated with the rest of the config
        core = optax.sgd(schedule, momentum=optim.b1)
    tx = core
    if optim.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm), core)
    frozen = tuple(optim.frozen)
    if frozen:
        tx = optax.chain(tx, zero_frozen_updates(frozen))
    return tx


def _path_names(path) -> list[str]:
    """A parameter's path as names; the boxes' own `value` attribute left out."""
    names = [str(getattr(key, "key", getattr(key, "name", key))) for key in path]
    return [name for name in names if name != "value"]


def muon_dimensions(params):
    """Which parameters Muon orthogonalises, and over which axes: the kernels of the
    transformer blocks (`layers_N/...`), reducing over their input axes (all but the last
    for an attention output kernel (heads, head_dim, out), the first for the others).
    None for the rest -- embeddings, output heads, norms, positions, convolutions -- which
    Adam trains, as Muon's authors do for embeddings and heads."""
    dims = optax.contrib.MuonDimensionNumbers

    def spec(path, x):
        names = _path_names(path)
        in_block = any(name.startswith("layers_") for name in names)
        if not names or names[-1] != "kernel" or x.ndim < 2 or not in_block:
            return None
        if names[-2] == "out":
            return dims(tuple(range(x.ndim - 1)), x.ndim - 1)
        return dims(0, tuple(range(1, x.ndim)))

    return jax.tree_util.tree_map_with_path(spec, params)


def zero_frozen_updates(frozen: tuple[str, ...]) -> optax.GradientTransformation:
    """Zeroes the final update of every parameter whose path ("params/base/...") starts
    with one of `frozen`: after weight decay, so those parameters never change at all.

    A last stateless step rather than `optax.multi_transform`, so the optimizer state
    keeps the parameters' tree structure (and with it their shardings).
    """

    def is_frozen(path) -> bool:
        name = "/".join(_path_names(path))
        return any(name.startswith(prefix) for prefix in frozen)

    def update(updates, state, params=None):
        del params
        zeroed = jax.tree_util.tree_map_with_path(
            lambda path, u: jnp.zeros_like(u) if is_frozen(path) else u, updates
        )
        return zeroed, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
