"""The training state: one pytree, created directly in its sharded layout.

`create_sharded_state` follows the standard recipe: trace the initialiser with
`jax.eval_shape` (no memory), read the logical partition specs the model declared,
map them to mesh shardings with the config's rules, and run the initialiser under
`jax.jit(..., out_shardings=...)`, so with fsdp > 1 no device ever holds a full,
unsharded copy of the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omni_img.sharding import mesh_context

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: no hidden Python-side state."""

    step: jax.Array  # int32 scalar: optimizer updates applied so far
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    rng: jax.Array  # uint32[2]: split once per step


def _init_boxed_state(
    init_params: Callable[[jax.Array], PyTree], tx: optax.GradientTransformation, rng: jax.Array
) -> TrainState:
    """The state with params still wrapped in their logical-partitioning boxes."""
    params_rng, state_rng = jax.random.split(rng)
    params = init_params(params_rng)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree.map(lambda x: x, params),
        rng=state_rng,
    )


def state_shardings(
    init_params: Callable[[jax.Array], PyTree],
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules,
) -> tuple[TrainState, TrainState]:
    """(abstract unboxed state, NamedSharding tree) for the state `init_params` builds."""
    boxed = jax.eval_shape(
        lambda rng: _init_boxed_state(init_params, tx, rng), jax.random.PRNGKey(0)
    )
    shardings = jax.tree.map(
        lambda leaf: _leaf_sharding(leaf, mesh, rules),
        boxed,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )
    abstract = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        nn.unbox(boxed),
        shardings,
    )
    return abstract, shardings


def create_sharded_state(
    init_params: Callable[[jax.Array], PyTree],
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules,
    seed: int,
) -> TrainState:
    """Initialise the state straight into its shardings.

    `init_params(rng)` returns the model's (possibly logically boxed) params.
    """
    _, shardings = state_shardings(init_params, tx, mesh, rules)

    def init(rng):
        return nn.unbox(_init_boxed_state(init_params, tx, rng))

    with mesh_context(mesh, rules):
        return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))


def to_host(tree: PyTree) -> PyTree:
    """NumPy copies of a (possibly boxed) tree of global arrays, on every process.

    Arrays this process holds whole (replicated ones included) are copied directly;
    an array split across processes (fsdp over hosts) is all-gathered first, which is
    collective: every process must call this together.
    """
    tree = nn.unbox(tree)
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_replicated or x.is_fully_addressable:
            return jax.device_get(x)
        return multihost_utils.process_allgather(x, tiled=True)

    return jax.tree.map(one, tree)


def _leaf_sharding(leaf, mesh: Mesh, rules) -> NamedSharding:
    """A leaf's mesh sharding from its logical box (replicated when it has none), made
    `_shardable`.

    Leaf by leaf rather than over whole trees of specs: an optimizer state may hold
    empty tuples (optax's MaskedNode, where Muon or Adam skips a parameter), which a
    tree of specs would take for partition specs."""
    value = nn.unbox(leaf)
    if not hasattr(value, "shape"):  # a box around an empty MaskedNode: nothing to place
        return value
    spec = leaf.get_partition_spec() if isinstance(leaf, nn.meta.AxisMetadata) else PartitionSpec()
    return _shardable(value, nn.logical_to_mesh_sharding(spec, mesh, rules))


def _shardable(leaf, sharding: NamedSharding) -> NamedSharding:
    """Replicate the dimensions a rule would split unevenly (e.g. 3 RGB channels over 4).

    Small layers at a model's edges rarely divide by the mesh; replicating them costs
    little, and it keeps every rule table valid for every model.
    """
    spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
    for dim, axes in enumerate(spec):
        if axes is None:
            continue
        names = axes if isinstance(axes, tuple) else (axes,)
        if leaf.shape[dim] % math.prod(sharding.mesh.shape[name] for name in names):
            spec[dim] = None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))
