"""The optimizer: frozen parameter prefixes get no update, not even weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from omni_img.config.defaults import training_defaults
from omni_img.training.optim import make_optimizer


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
