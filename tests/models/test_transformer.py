"""Transformer blocks: shapes, KV-cache decoding equals a full causal pass, masks, RoPE."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_img.models import transformer as tf

B, L, S, D, H = 2, 7, 5, 32, 4


def _block(**kw):
    return tf.Block(num_heads=H, head_dim=D // H, mlp_dim=64, **kw)


def _init(module, *args):
    return jax.jit(module.init)(jax.random.key(1), *args)


def _apply(module, variables, *args, **kw):
    """module.apply, jitted: eager flax dispatch is slow on two shared cores."""
    return jax.jit(lambda v, a, k: module.apply(v, *a, **k))(variables, args, kw)


def _inputs():
    kx, km = jax.random.split(jax.random.key(0))
    x_BxLxD = jax.random.normal(kx, (B, L, D))
    mem_BxSxD = jax.random.normal(km, (B, S, D))
    mem_mask_BxS = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    return x_BxLxD, mem_BxSxD, mem_mask_BxS


def test_block_shapes_and_logical_axes():
    x, mem, mask = _inputs()
    block = _block(causal=True, cross_attention=True, use_rope=True)
    variables = _init(block, x, mem, mask)
    y, cache = _apply(block, variables, x, mem, mask)
    assert y.shape == x.shape and cache is None
    leaves = jax.tree.leaves(variables["params"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
    names = {n for v in leaves for n in v.names if n is not None}
    assert {"embed", "heads", "head_dim", "mlp", "norm"} <= names


@pytest.mark.parametrize("mlp_kind", ["swiglu", "gelu"])
def test_cached_decoding_equals_full_causal_pass(mlp_kind):
    x, mem, mask = _inputs()
    block = _block(causal=True, cross_attention=True, use_rope=True, mlp_kind=mlp_kind)
    variables = _init(block, x, mem, mask)
    full, _ = _apply(block, variables, x, mem, mask)

    mem_kv = block.apply(variables, mem, method=tf.Block.memory_kv)
    cache = tf.init_kv_cache(B, L, H, D // H)

    def step(cache, t):
        x_t = jax.lax.dynamic_slice_in_dim(x, t, 1, axis=1)
        y_t, cache = block.apply(variables, x_t, mem_kv, mask, cache=cache, cache_index=t)
        return cache, y_t[:, 0]

    _, ys = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(L)))(cache)
    np.testing.assert_allclose(np.swapaxes(ys, 0, 1), full, atol=1e-5)

    # A prefill of 3 tokens then single steps gives the same result too.
    y3, cache = _apply(block, variables, x[:, :3], mem_kv, mask, cache=cache, cache_index=0)
    np.testing.assert_allclose(y3, full[:, :3], atol=1e-5)


def test_memory_padding_is_ignored_and_kv_form_matches():
    x, mem, mask = _inputs()
    block = _block(cross_attention=True)
    variables = _init(block, x, mem, mask)
    y, _ = _apply(block, variables, x, mem, mask)
    garbage = mem.at[0, 3:].set(100.0)  # only padded slots of example 0 change
    y2, _ = _apply(block, variables, x, garbage, mask)
    np.testing.assert_allclose(y, y2, atol=1e-5)
    kv = block.apply(variables, mem, method=tf.Block.memory_kv)
    y3, _ = _apply(block, variables, x, kv, mask)
    np.testing.assert_allclose(y, y3, atol=1e-6)


def test_bidirectional_sees_the_future_and_causal_does_not():
    x, _, _ = _inputs()
    for causal in (False, True):
        block = _block(causal=causal)
        variables = _init(block, x)
        y, _ = _apply(block, variables, x)
        y2, _ = _apply(block, variables, x.at[:, -1].set(5.0))
        changed = not np.allclose(y[:, 0], y2[:, 0], atol=1e-6)
        assert changed == (not causal)


def test_rope_scores_depend_on_relative_position_only():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

    def score(pq, pk):
        rq = tf.apply_rope(q, jnp.array([[pq]]))
        rk = tf.apply_rope(k, jnp.array([[pk]]))
        return float(jnp.sum(rq * rk))

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-4)


def test_remat_block_and_bf16_compute():
    x, mem, mask = _inputs()
    block = nn.remat(tf.Block)(
        num_heads=H, head_dim=D // H, mlp_dim=64, cross_attention=True, dtype=jnp.bfloat16
    )
    variables = _init(block, x, mem, mask)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))

    def loss(p):
        y, _ = block.apply(p, x, mem, mask)
        return jnp.sum(y.astype(jnp.float32) ** 2)

    grads = jax.jit(jax.grad(loss))(variables)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    kv = block.apply(variables, mem, method=tf.Block.memory_kv)
    assert kv.k.shape == (B, S, H, D // H)


def test_positions_2d():
    rows, cols = tf.grid_rows_cols(3, 4)
    assert rows.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and cols.tolist() == [0, 1, 2, 3] * 3
    pos = tf.Positions2D(3, 4, 8)
    variables = pos.init(jax.random.key(0), rows, cols)
    assert pos.apply(variables, rows, cols).shape == (12, 8)
