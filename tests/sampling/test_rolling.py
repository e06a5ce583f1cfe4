"""Rolling-decoder sampling: call counts, steps per band, mode agreement with one band,
determinism, and streaming (order against the token source, equality with non-streamed)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.models import rolling_decoder as rd
from omni_img.sampling import rolling as rs

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


def randomized(params, seed=0, scale=0.3):
    """Random values for every leaf: with the zero-initialised gates and output layer the
    model would predict v = 0 and every mode would trivially agree."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    )


def setup_model(**overrides):
    cfg = rd.rolling_decoder_config(TINY, **overrides)
    params = jax.jit(lambda r: nn.unbox(rd.init_rolling_decoder(cfg, r, batch=B)))(
        jax.random.key(0)
    )
    ks = jax.random.split(jax.random.key(1), 2)
    tokens = jax.random.randint(ks[0], (B, cfg.token_rows, cfg.token_cols), 0, cfg.codebook_size)
    text = jax.random.normal(ks[1], (B, S, cfg.text_dim))
    mask = jnp.array([[True] * S, [True] * 3 + [False] * (S - 3)])
    return cfg, randomized(params), tokens, text, mask


@pytest.fixture(scope="module")
def tiny():
    return setup_model()


@pytest.fixture(scope="module")
def sampled(tiny):
    """Both modes on the tiny model, same seed (compiled once for the module)."""
    cfg, params, tokens, text, mask = tiny
    return {
        mode: rs.sample(params, cfg, tokens, text, mask, jax.random.key(5), mode)
        for mode in rs.MODES
    }


@pytest.mark.parametrize(
    "n, k, w, want",
    [(4, 8, 2, 20), (4, 8, 4, 14), (4, 8, 8, 11), (1, 8, 4, 8), (6, 6, 3, 16), (4, 4, 1, 16)],
)
def test_call_count_formula(n, k, w, want):
    cfg = rd.rolling_decoder_config(
        TINY, num_bands=n, image_height=8 * n, steps_per_band=k, window=w
    )
    assert rs.num_model_calls(cfg, "rolling") == want == k + (n - 1) * k // w
    assert rs.num_model_calls(cfg, "sequential") == n * k
    assert rs.steps_per_band(cfg, "rolling") == rs.steps_per_band(cfg, "sequential") == k


def test_plan_staggers_bands_by_k_over_w():
    cfg = rd.rolling_decoder_config(TINY, steps_per_band=8, window=4)
    plan = rs.phase_plan(cfg, "rolling")
    assert len(plan) == cfg.num_bands + 4 - 1 and {ph.steps for ph in plan} == {2}
    assert [ph.size for ph in plan] == [1, 2, 3, 4, 3, 2, 1]
    assert [ph.commit for ph in plan] == [False] * 4 + [True] * 3
    seq = rs.phase_plan(cfg, "sequential")
    assert [(ph.lo, ph.size, ph.steps) for ph in seq] == [(g, 1, 8) for g in range(4)]


def test_modes_same_steps_per_band_rolling_fewer_calls(tiny, sampled):
    cfg = tiny[0]
    for mode, (image, stats) in sampled.items():
        assert image.shape == (B, 32, 32, 3) and bool(jnp.all(jnp.abs(image) <= 1.0))
        # Counted while running, not taken from the formula.
        np.testing.assert_array_equal(stats["steps_per_band"], [cfg.steps_per_band] * 4)
        assert int(stats["model_calls"]) == rs.num_model_calls(cfg, mode)
    assert int(sampled["rolling"][1]["model_calls"]) < int(sampled["sequential"][1]["model_calls"])
    # Same noise and steps. Band 0 sees only itself (band-causal), so it is the same in both
    # modes; lower bands see a still-noisy band above them in rolling mode, so they differ.
    seq, rol = sampled["sequential"][0], sampled["rolling"][0]
    top = cfg.band_height
    np.testing.assert_allclose(seq[:, :top], rol[:, :top], atol=1e-5, rtol=0)
    assert not np.allclose(seq[:, top:], rol[:, top:], atol=1e-3)


def test_deterministic_for_a_seed(tiny, sampled):
    cfg, params, tokens, text, mask = tiny
    again, _ = rs.sample(params, cfg, tokens, text, mask, jax.random.key(5), "rolling")
    np.testing.assert_array_equal(again, sampled["rolling"][0])
    other, _ = rs.sample(params, cfg, tokens, text, mask, jax.random.key(6), "rolling")
    assert not np.allclose(other, again)


def test_one_band_modes_agree():
    cfg, params, tokens, text, mask = setup_model(num_bands=1, image_height=8, token_rows=2)
    seq, s_stats = rs.sample(params, cfg, tokens, text, mask, jax.random.key(3), "sequential")
    rol, r_stats = rs.sample(params, cfg, tokens, text, mask, jax.random.key(3), "rolling")
    assert int(s_stats["model_calls"]) == int(r_stats["model_calls"]) == cfg.steps_per_band
    np.testing.assert_allclose(seq, rol, atol=1e-6, rtol=0)


class RowSource:
    """A token-row iterator that logs when each row is handed out; `pairs` yields
    (row_index, row) like the AR sampler's `stream_rows`, else bare (B, w) rows."""

    def __init__(self, tokens, log, pairs):
        self.rows = np.asarray(tokens).transpose(1, 0, 2)  # (h, B, w)
        self.log = log
        self.pairs = pairs

    def __iter__(self):
        for i, row in enumerate(self.rows):
            self.log.append(("row", i))
            yield (i, row) if self.pairs else row


def _stream(cfg, params, tokens, text, mask, mode, log, pairs=True):
    out = {}
    source = RowSource(tokens, log, pairs)
    for g, image in rs.stream(params, cfg, source, text, mask, jax.random.key(5), mode):
        log.append(("band", g))
        out[g] = image
    return out


def test_stream_first_band_before_last_token_row_and_equal_to_non_streamed(tiny, sampled):
    cfg, params, tokens, text, mask = tiny
    log = []
    out = _stream(cfg, params, tokens, text, mask, "sequential", log)
    assert sorted(out) == list(range(cfg.num_bands))
    first_band = log.index(("band", 0))
    last_row = log.index(("row", cfg.token_rows - 1))
    assert first_band < last_row
    # Band 0 started with exactly the rows covering it plus the look-ahead.
    assert [e for e in log[:first_band] if e[0] == "row"] == [
        ("row", i) for i in range(cfg.rows_needed(0))
    ]
    # Partial images: finished bands filled, the rest still zero.
    assert np.all(out[0][:, cfg.band_height :] == 0) and np.any(out[0][:, : cfg.band_height] != 0)
    want = np.asarray(sampled["sequential"][0])
    np.testing.assert_allclose(out[cfg.num_bands - 1], want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(
        out[0][:, : cfg.band_height], want[:, : cfg.band_height], atol=1e-5, rtol=0
    )


@pytest.mark.slow
def test_stream_rolling_equals_non_streamed(tiny, sampled):
    cfg, params, tokens, text, mask = tiny
    log = []
    out = _stream(cfg, params, tokens, text, mask, "rolling", log, pairs=False)
    assert log.index(("band", 0)) < log.index(("row", cfg.token_rows - 1))
    np.testing.assert_allclose(
        out[cfg.num_bands - 1], np.asarray(sampled["rolling"][0]), atol=1e-5, rtol=0
    )


def test_user_errors(tiny):
    cfg, params, tokens, text, mask = tiny
    with pytest.raises(UserError, match="unknown decoder mode 'diagonal'"):
        rs.sample(params, cfg, tokens, text, mask, jax.random.key(0), "diagonal")
    with pytest.raises(UserError, match="token grid"):
        rs.sample(params, cfg, tokens[:, :4], text, mask, jax.random.key(0), "rolling")
    with pytest.raises(UserError, match="ended after 2 of 8 rows"):
        list(
            rs.stream(
                params,
                cfg,
                iter(np.asarray(tokens).transpose(1, 0, 2)[:2]),
                text,
                mask,
                jax.random.key(0),
                "sequential",
            )
        )
    with pytest.raises(UserError, match="does not divide"):
        rs.phase_plan(dataclasses.replace(cfg, window=3), "rolling")


# ----------------------------------------------------------------------------- conv base


@pytest.fixture(scope="module")
def based():
    """The tiny decoder refining a (random) conv decoder: 32 px, 8x8 tokens of 1000 codes."""
    from omni_img.models.tokenizer import TokenizerConfig

    spec = TokenizerConfig(image_size=32, patch_size=4, widths=(8, 16), num_res_blocks=1)
    cfg = rd.rolling_decoder_config(TINY, base_tokenizer=spec, codebook_size=spec.num_codes)
    params = jax.jit(lambda r: nn.unbox(rd.init_rolling_decoder(cfg, r, batch=B)))(
        jax.random.key(0)
    )
    ks = jax.random.split(jax.random.key(2), 2)
    tokens = jax.random.randint(ks[0], (B, cfg.token_rows, cfg.token_cols), 0, spec.num_codes)
    text = jax.random.normal(ks[1], (B, S, cfg.text_dim))
    return cfg, params, tokens, text, jnp.ones((B, S), bool)


def _conv(cfg, params, tokens):
    from omni_img.models.tokenizer import Tokenizer

    base = Tokenizer(cfg.base_tokenizer)
    image = base.apply({"params": params["params"]["base"]}, tokens, method="decode")
    return np.clip(np.asarray(image), -1.0, 1.0)


def test_untrained_residual_reproduces_the_band_masked_conv_decode(based):
    """The residual's output layer starts at zero: the sampler's K Euler steps then land
    exactly on each band's base, the conv decode of the rows the band may see."""
    cfg, params, tokens, text, mask = based
    image, _ = rs.sample(params, cfg, tokens, text, mask, jax.random.key(3), mode="rolling")
    image = np.asarray(image)
    r = cfg.band_height
    for g in range(cfg.num_bands):
        rows = np.minimum(np.arange(cfg.token_rows), cfg.rows_needed(g) - 1)
        want = _conv(cfg, params, tokens[:, rows])[:, g * r : (g + 1) * r]
        np.testing.assert_allclose(image[:, g * r : (g + 1) * r], want, atol=1e-4)
    # The last band sees every row: it is the plain conv decode.
    np.testing.assert_allclose(image[:, -r:], _conv(cfg, params, tokens)[:, -r:], atol=1e-4)


def test_conv_base_streams_exactly(based):
    cfg, params, tokens, text, mask = based
    params = randomized(params, seed=4)  # a non-zero residual
    want = np.asarray(
        rs.sample(params, cfg, tokens, text, mask, jax.random.key(5), "sequential")[0]
    )
    log = []
    out = _stream(cfg, params, tokens, text, mask, "sequential", log)
    assert log.index(("band", 0)) < log.index(("row", cfg.token_rows - 1))
    np.testing.assert_allclose(out[cfg.num_bands - 1], want, atol=1e-5, rtol=0)
