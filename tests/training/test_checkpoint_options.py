"""Checkpoint options that change how a save runs, never what it holds."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from omni_img.training.checkpoint import Checkpointer
from omni_img.training.data import make_train_iterator
from omni_img.training.state import TrainState


def options(**changes) -> ml_collections.ConfigDict:
    values = {"every_steps": 1, "every_minutes": 0.0, "keep": 2, "keep_every": 0,
              "async_save": True, "replica_parallel": False, "device_snapshot": True}  # fmt: skip
    return ml_collections.ConfigDict(values | changes)


@pytest.mark.parametrize(
    ("replica_parallel", "device_snapshot"), [(False, False), (True, False), (False, True)]
)
def test_replicated_and_sharded_arrays_round_trip(tmp_path, replica_parallel, device_snapshot):
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
    checkpointer = Checkpointer(
        tmp_path, options(replica_parallel=replica_parallel, device_snapshot=device_snapshot)
    )
    checkpointer.save(5, state)
    checkpointer.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)  # fmt: skip
    restored = checkpointer.restore(abstract, step=5)
    checkpointer.close()
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding == want.sharding


def batches(drawn: int):
    """A shuffled data iterator with `drawn` batches already drawn."""
    it = make_train_iterator(range(100), global_batch_size=8, seed=0,
                             transform=lambda i: {"x": np.asarray(i)})  # fmt: skip
    for _ in range(drawn):
        next(it)
    return it


def test_a_background_save_holds_the_state_and_position_of_its_step(tmp_path):
    """The loop donates the state to its next step and draws the next batch while a
    background thread saves: the checkpoint must hold what step 3 had, not what came after."""
    mesh = jax.make_mesh((8,), ("data",))
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())  # saved from one replica's copy
    values = np.arange(64, dtype=np.float32)
    state = TrainState(step=jnp.int32(3), params={"w": jax.device_put(values, sharded)},
                       opt_state=(), ema_params={"w": jax.device_put(-values, replicated)},
                       rng=jax.random.PRNGKey(0))  # fmt: skip
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)  # fmt: skip
    data = batches(3)
    checkpointer = Checkpointer(tmp_path, options())
    assert checkpointer.in_background
    checkpointer.save(3, state, data)
    next_step = jax.jit(
        lambda s: s.replace(params={"w": s.params["w"] + 1.0}, ema_params={"w": s.params["w"]}),
        donate_argnums=0,
    )
    later = next_step(state)  # the saved arrays' buffers are given away here
    next(data), next(data)
    checkpointer.wait()

    resumed = batches(0)
    restored = checkpointer.restore(abstract, resumed, step=3)
    checkpointer.close()
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), values)
    np.testing.assert_array_equal(np.asarray(restored.ema_params["w"]), -values)
    assert restored.ema_params["w"].sharding == replicated
    np.testing.assert_array_equal(np.asarray(later.params["w"]), values + 1.0)
    np.testing.assert_array_equal(next(resumed)["x"], next(batches(3))["x"])
