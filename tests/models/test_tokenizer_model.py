"""The tokenizer model: shapes, both quantizers, and remat giving the same gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_img.models.tokenizer import Tokenizer, TokenizerConfig


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_round_trip_shapes_and_ids_in_range(quantizer):
    spec = TokenizerConfig(image_size=16, widths=(8, 16), quantizer=quantizer, codebook_size=64)
    model = Tokenizer(spec)
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
    params = model.init(jax.random.PRNGKey(1), images)
    recon, ids, _ = model.apply(params, images)
    assert recon.shape == images.shape and ids.shape == (2, 4, 4)
    assert int(ids.min()) >= 0 and int(ids.max()) < spec.num_codes
    decoded = model.apply(params, ids, method="decode")
    np.testing.assert_allclose(decoded, recon, atol=1e-5)  # decode(encode(x)) is the forward


def test_remat_gives_the_same_gradients():
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
    grads = []
    for remat in (False, True):
        model = Tokenizer(TokenizerConfig(image_size=16, widths=(8, 16), remat=remat))
        params = model.init(jax.random.PRNGKey(1), images)

        def loss(p, model=model):
            return jnp.mean(jnp.abs(model.apply(p, images)[0] - images))

        grads.append(jax.grad(loss)(params))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
