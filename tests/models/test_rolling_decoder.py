"""Rolling decoder model: shapes, config errors, band-causal structure, cached K/V equal the
full pass, the loss trains, and a sharded forward pass equals the unsharded one."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from omni_img.errors import UserError
from omni_img.models import rolling_decoder as rd
from omni_img.models.transformer import KVCache
from omni_img.sharding import make_mesh, mesh_context
from omni_img.sharding.rules import DEFAULT_RULES

TINY = dict(
    image_height=32,
    image_width=32,
    num_bands=4,
    steps_per_band=4,
    window=2,
    token_rows=8,
    token_cols=8,
    codebook_size=64,
    text_dim=16,
    dim=32,
    num_layers=1,
    num_heads=2,
    lookahead_rows=1,
)
B, S = 2, 5


def tiny_cfg(**kw):
    return rd.rolling_decoder_config(TINY, **kw)


def randomized(params, seed=0, scale=0.3):
    """Random values for every leaf: the zero-initialised gates would hide all structure."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    )


def inputs(cfg, seed=1, batch=B):
    ks = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(ks[0], (batch, cfg.num_bands, cfg.band_height, cfg.image_width, 3))
    tokens = jax.random.randint(
        ks[1], (batch, cfg.token_rows, cfg.token_cols), 0, cfg.codebook_size
    )
    text = jax.random.normal(ks[2], (batch, S, cfg.text_dim))
    mask = jnp.arange(S)[None] < jnp.array([S, 3] * (batch // 2) + [S] * (batch % 2))[:, None]
    return x, tokens, text, mask


@pytest.fixture(scope="module")
def model_and_params():
    cfg = tiny_cfg()
    params = jax.jit(lambda r: nn.unbox(rd.init_rolling_decoder(cfg, r, batch=B)))(
        jax.random.key(0)
    )
    return rd.RollingDecoder(cfg), randomized(params)


@pytest.mark.parametrize("grid", [8, 16])
def test_shapes_at_64px_for_both_token_grids(grid):
    cfg = rd.rolling_decoder_config(token_rows=grid, token_cols=grid)
    assert cfg.band_height == 16 and cfg.patches_per_band == 64
    boxed = jax.eval_shape(lambda r: rd.init_rolling_decoder(cfg, r, batch=B), jax.random.key(0))
    names = {
        n
        for leaf in jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
        for n in leaf.names
    }
    assert {"embed", "heads", "mlp", "vocab"} <= names
    x, tokens, text, mask = inputs(cfg)
    text = jnp.zeros((B, S, cfg.text_dim))
    v = jax.eval_shape(
        rd.RollingDecoder(cfg).apply,
        nn.unbox(boxed),
        x,
        jnp.zeros((B, cfg.num_bands)),
        tokens,
        text,
        mask,
    )
    assert v.shape == (B, 4, 16, 64, 3) and v.dtype == jnp.float32


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(num_bands=3), "does not divide image_height"),
        (dict(window=3), "does not divide steps_per_band"),
        (dict(patch_size=3), "patch_size"),
        (dict(num_bandz=2), r"config\.model\.num_bandz .*did you mean config\.model\.num_bands\?"),
    ],
)
def test_config_errors_name_the_problem(bad, message):
    with pytest.raises(UserError, match=message):
        tiny_cfg(**bad)


def test_rows_needed_covers_band_plus_lookahead():
    cfg = tiny_cfg()  # 8 token rows over 4 bands: 2 rows each, +1 look-ahead
    assert [cfg.rows_needed(g) for g in range(4)] == [3, 5, 7, 8]
    cfg16 = rd.rolling_decoder_config(token_rows=16, token_cols=16, lookahead_rows=0)
    assert [cfg16.rows_needed(g) for g in range(4)] == [4, 8, 12, 16]


def test_patchify_round_trip():
    x = jax.random.normal(jax.random.key(0), (2, 3, 8, 12, 3))
    np.testing.assert_array_equal(rd.unpatchify(rd.patchify(x, 4), 3, 8, 12, 4), x)


def test_band_causal_and_token_rows_local(model_and_params):
    """Band g ignores the bands below it and token rows ≥ rows_needed(g)."""
    model, params = model_and_params
    cfg = model.cfg
    x, tokens, text, mask = inputs(cfg)
    t = jnp.full((B, cfg.num_bands), 0.5)
    apply = jax.jit(model.apply)
    v = apply(params, x, t, tokens, text, mask)
    v_below = apply(params, x.at[:, 2:].add(1.0), t, tokens, text, mask)
    np.testing.assert_array_equal(v[:, :2], v_below[:, :2])
    assert not np.allclose(v[:, 2:], v_below[:, 2:])
    rows0 = cfg.rows_needed(0)
    v_tok = apply(params, x, t, tokens.at[:, rows0:].set(7), text, mask)
    np.testing.assert_array_equal(v[:, 0], v_tok[:, 0])
    assert not np.allclose(v[:, -1], v_tok[:, -1])
    # Text padding is not attended: changing padded positions changes nothing.
    v_pad = apply(params, x, t, tokens, text.at[1, 3:].set(9.0), mask)
    np.testing.assert_array_equal(v, v_pad)


def test_another_word_in_the_caption_changes_every_band(model_and_params):
    """The decoder reads the text: another embedding at one word's position (not padding)
    changes the first band as well as the last (text is not limited to token rows)."""
    model, params = model_and_params
    cfg = model.cfg
    x, tokens, text, mask = inputs(cfg)
    t = jnp.full((B, cfg.num_bands), 0.5)
    apply = jax.jit(model.apply)
    v = apply(params, x, t, tokens, text, mask)
    other_word = text.at[:, 1].set(jax.random.normal(jax.random.key(5), (B, cfg.text_dim)))
    v_word = apply(params, x, t, tokens, other_word, mask)
    for band in (0, cfg.num_bands - 1):
        assert not np.allclose(v[:, band], v_word[:, band]), band


def test_cached_bands_equal_the_full_pass(model_and_params):
    """Sampling-style calls (clean bands committed one by one into the K/V cache, then a
    window) give the training pass's velocities."""
    model, params = model_and_params
    cfg = model.cfg
    x, tokens, text, mask = inputs(cfg)
    t = jnp.array([[0.0, 0.0, 0.75, 1.0]] * B)
    v_full = jax.jit(model.apply)(params, x, t, tokens, text, mask)

    memory = model.apply(params, tokens, text, mask, method="encode_memory")
    denoise = jax.jit(lambda *a: model.apply(params, *a, method="denoise"))
    shape = (
        cfg.num_layers,
        B,
        cfg.num_bands * cfg.patches_per_band,
        cfg.num_heads,
        cfg.dim // cfg.num_heads,
    )
    cache = KVCache(k=jnp.zeros(shape), v=jnp.zeros(shape))
    for g in range(2):  # commit the clean bands 0 and 1
        _, cache = denoise(x[:, g : g + 1], t[:, g : g + 1], jnp.array([g]), memory, cache)
    v_win, _ = denoise(x[:, 2:], t[:, 2:], jnp.array([2, 3]), memory, cache)
    np.testing.assert_allclose(v_win, v_full[:, 2:], atol=1e-5, rtol=1e-5)


def test_training_noise_levels():
    cfg = tiny_cfg(rolling_train_prob=0.5)
    t = np.asarray(rd.training_noise_levels(cfg, jax.random.key(0), 4096))
    noisy = (t > 0) & (t < 1)
    assert noisy.sum(1).min() >= 1 and noisy.sum(1).max() <= cfg.window
    # Clean context only above the noisy bands, unstarted bands only below.
    first_noisy = noisy.argmax(1)
    for row, f in zip(t[:64], first_noisy[:64]):
        assert np.all(row[:f] == 0.0) and np.all(np.diff(row) >= 0)
    # Sequential snapshots: each band index equally likely as the noisy one.
    single = noisy.sum(1) == 1
    counts = np.bincount(first_noisy[single], minlength=cfg.num_bands)
    assert counts.min() > 0.5 * counts.mean()


def test_loss_decreases_on_tiny_overfit():
    cfg = tiny_cfg(image_height=16, image_width=16, num_bands=2, token_rows=4, token_cols=4)
    params = jax.jit(lambda r: nn.unbox(rd.init_rolling_decoder(cfg, r, batch=4)))(
        jax.random.key(0)
    )
    yy, xx = np.mgrid[0:16, 0:16] / 16.0
    images = np.stack(
        [np.sin(6 * xx + k)[..., None] * np.array([1.0, -0.5, 0.3]) * 0.8 for k in range(4)]
    ).astype(np.float32)
    batch = dict(
        image=jnp.asarray(images),
        tokens=jnp.arange(64).reshape(4, 4, 4) % 64,
        text_emb=jnp.ones((4, S, cfg.text_dim)),
        text_mask=jnp.ones((4, S), bool),
    )
    tx = optax.adam(3e-3)
    opt = tx.init(params)
    eval_rng = jax.random.key(123)

    @jax.jit
    def step(params, opt, rng):
        (loss, _), grads = jax.value_and_grad(rd.rolling_loss, has_aux=True)(
            params, batch, rng, cfg
        )
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    @jax.jit
    def eval_loss(params):  # fixed noise and levels: a fair before/after comparison
        rngs = jax.random.split(eval_rng, 8)
        return jnp.mean(jax.vmap(lambda r: rd.rolling_loss(params, batch, r, cfg)[0])(rngs))

    before = float(eval_loss(params))
    for i in range(60):
        params, opt, loss = step(params, opt, jax.random.fold_in(jax.random.key(7), i))
    after = float(eval_loss(params))
    assert np.isfinite(after) and after < 0.6 * before, (before, after)


def test_loss_accepts_uint8_and_reports_metrics(model_and_params):
    _, params = model_and_params
    cfg = tiny_cfg()
    _, tokens, text, mask = inputs(cfg)
    img = jnp.full((B, 32, 32, 3), 255, jnp.uint8)
    batch = dict(image=img, tokens=tokens, text_emb=text, text_mask=mask)
    loss, metrics = jax.jit(rd.rolling_loss, static_argnums=3)(
        params, batch, jax.random.key(0), cfg
    )
    assert set(metrics) == {"loss", "noisy_bands", "x0_mse"} and np.isfinite(loss)
    assert 1.0 <= float(metrics["noisy_bands"]) <= cfg.window


def test_sharded_forward_matches_unsharded():
    cfg = tiny_cfg()
    batch = 4  # act_batch → (data, fsdp) = 4 ways
    x, tokens, text, mask = inputs(cfg, batch=batch)
    t = jnp.tile(jnp.array([[0.0, 0.3, 0.7, 1.0]]), (batch, 1))
    model = rd.RollingDecoder(cfg)
    init = lambda r: rd.init_rolling_decoder(cfg, r, batch=batch)
    unsharded_params = randomized(jax.jit(lambda r: nn.unbox(init(r)))(jax.random.key(0)))
    want = jax.jit(model.apply)(unsharded_params, x, t, tokens, text, mask)

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with mesh_context(mesh, DEFAULT_RULES):
        specs = nn.get_partition_spec(jax.eval_shape(init, jax.random.key(0)))
        shardings = nn.logical_to_mesh_sharding(specs, mesh, DEFAULT_RULES)
        params = jax.device_put(unsharded_params, shardings)
        kernel = params["params"]["block_0"]["mlp"]["wi"]["kernel"]
        assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
        got = jax.jit(model.apply)(params, x, t, tokens, text, mask)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def test_config_is_hashable_and_round_trips():
    cfg = tiny_cfg()
    assert hash(cfg) == hash(rd.rolling_decoder_config(dataclasses.asdict(cfg)))
