"""The large presets: shapes, parameter counts and shardings, by eval_shape and lowering only."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_img.config import load_config, validate_config
from omni_img.config.defaults import rules_from_config
from omni_img.models.generator import count_params
from omni_img.sharding import make_mesh
from omni_img.stages import generator, tokenizer
from omni_img.training.fit import abstract_train_state

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_tokenizer_imagenet256_shapes():
    config = load_config(str(ROOT / "experiments/tokenizer_imagenet256.py"))
    model = tokenizer.build_model(config)
    images = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)
    recon, ids, _ = jax.eval_shape(lambda p, x: model.apply(p, x), params, images)
    assert recon.shape == (2, 256, 256, 3)
    assert ids.shape == (2, 16, 16)
    assert model.spec.num_codes == 16384


@pytest.mark.parametrize("preset", ["gpu8", "tpu_v5p64"])
def test_t2i_256_shapes_and_shardings_on_8_devices(preset):
    config = load_config(str(ROOT / f"experiments/t2i_256.py:{preset}"))
    # The preset's mesh, shrunk to the 8 fake devices with the same axes kept.
    config.mesh.data = -1
    config.mesh.fsdp = 4 if preset == "tpu_v5p64" else 8
    config.mesh.tensor = 2 if preset == "tpu_v5p64" else 1
    validate_config(config, 8)
    mesh, rules = make_mesh(config.mesh), rules_from_config(config)
    model = generator.build_model(config, (16, 16), 16384)
    batch = {
        "text_ids": np.zeros((1, 128), np.int32),
        "text_mask": np.ones((1, 128), bool),
        "target_tokens": np.zeros((1, 16, 16), np.int32),
    }
    init = generator.init_fn(model, batch)
    abstract, shardings, _, _ = abstract_train_state(config, init, mesh, rules)
    decoder = count_params(abstract.params["decoder"])
    assert 250e6 < decoder < 350e6, decoder
    # fsdp shards the big matrices: per-device bytes of the params are ~1/fsdp of the total.
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.params))
    per_device = sum(
        np.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
        for x, s in zip(jax.tree.leaves(abstract.params), jax.tree.leaves(shardings.params))
    )
    shards = config.mesh.fsdp * config.mesh.tensor
    assert per_device < 1.3 * total / shards, (per_device, total)
