"""The optimizer: frozen parameter prefixes get no update, not even weight decay; Muon
orthogonalises the transformer blocks' kernels and leaves the rest to Adam."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from omni_img.config.defaults import training_defaults
from omni_img.training.optim import make_optimizer, muon_dimensions


def test_frozen_prefix_is_never_updated():
    optim = training_defaults().optim
    optim.weight_decay = 0.1
    optim.frozen = ("params/base",)
    tx = make_optimizer(optim, num_steps=10)
    params = {"params": {"base": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}}
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["params"]["base"]["w"], np.ones(3))
    assert np.all(np.asarray(params["params"]["head"]["w"]) < 1.0)


def test_no_frozen_prefix_is_the_plain_optimizer():
    optim = training_defaults().optim
    assert tuple(optim.frozen) == ()
    tx = make_optimizer(optim, num_steps=10)
    params = {"w": jnp.ones(2)}
    assert jax.tree.structure(tx.init(params)) == jax.tree.structure(
        make_optimizer(optim, num_steps=10).init(params)
    )


def _block_params():
    rng = np.random.default_rng(0)
    draw = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {
        "embed": {"embedding": draw(16, 8)},
        "layers_0": {
            "mlp": {"wo": {"kernel": nn.LogicallyPartitioned(draw(12, 8), ("mlp", "embed"))}},
            "attn": {"query": {"kernel": draw(8, 2, 4)}, "out": {"kernel": draw(2, 4, 8)}},
            "norm": {"scale": draw(8)},
        },
        "head": {"kernel": draw(8, 16)},
    }


def test_muon_takes_the_block_kernels_over_their_input_axes():
    specs = muon_dimensions(_block_params())
    block = specs["layers_0"]
    assert tuple(block["mlp"]["wo"]["kernel"].value) == (0, (1,))  # boxed: the spec boxed
    assert tuple(block["attn"]["query"]["kernel"]) == (0, (1, 2))
    assert tuple(block["attn"]["out"]["kernel"]) == ((0, 1), 2)
    assert block["norm"]["scale"] is None
    assert specs["embed"]["embedding"] is None and specs["head"]["kernel"] is None


def test_muon_update_of_a_block_kernel_is_orthogonalised():
    optim = training_defaults().optim
    optim.update({"name": "muon", "weight_decay": 0.0, "clip_norm": 0.0, "warmup_steps": 0})
    tx = make_optimizer(optim, num_steps=10)
    params = nn.unbox(_block_params())
    rng = np.random.default_rng(1)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    singular = np.linalg.svd(np.asarray(updates["layers_0"]["mlp"]["wo"]["kernel"]), False, False)
    assert singular.max() / singular.min() < 2.0  # Newton-Schulz: all near one value
    raw = np.linalg.svd(np.asarray(grads["layers_0"]["mlp"]["wo"]["kernel"]), False, False)
    assert raw.max() / raw.min() > 2.0  # the gradient itself is far from orthogonal
    # Adam's first step moves every entry of the head by the same amount (a sign step,
    # Nesterov's look-ahead included), whatever the gradient's size there.
    head = np.abs(np.asarray(updates["head"]["kernel"]))
    np.testing.assert_allclose(head, head.flat[0], rtol=1e-4)
    assert optim.lr <= head.flat[0] < 2 * optim.lr
