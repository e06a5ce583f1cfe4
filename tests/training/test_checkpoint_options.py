"""Checkpoint options that change how a save runs, never what it holds."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from omni_img.training.checkpoint import Checkpointer
from omni_img.training.state import TrainState


@pytest.mark.parametrize("replica_parallel", [False, True])
def test_replicated_and_sharded_arrays_round_trip(tmp_path, replica_parallel):
    mesh = jax.make_mesh((8,), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    values = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    state = TrainState(
        step=jnp.int32(5),
        params={"w": jax.device_put(values, replicated), "v": jax.device_put(values, sharded)},
        opt_state=(),
        ema_params={"w": jax.device_put(-values, replicated)},
        rng=jax.random.PRNGKey(1),
    )
    options = ml_collections.ConfigDict({"every_steps": 1, "every_minutes": 0.0, "keep": 2,
                                         "keep_every": 0, "async_save": True,
                                         "replica_parallel": replica_parallel})  # fmt: skip
    checkpointer = Checkpointer(tmp_path, options)
    checkpointer.save(5, state)
    checkpointer.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)  # fmt: skip
    restored = checkpointer.restore(abstract, step=5)
    checkpointer.close()
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding == want.sharding
