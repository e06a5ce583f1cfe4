"""AR sampling: KV-cached loop == uncached reference token for token; streaming; filters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_img.models import generator as g
from omni_img.sampling import ar
from tests.support.tiny_configs import small_generator

B = 3
GREEDY_CFG = ar.SamplingConfig(temperature=0.0, cfg_scale=3.0)
TOPK_CFG = ar.SamplingConfig(temperature=1.0, top_k=8, cfg_scale=2.5)
TOPP = ar.SamplingConfig(temperature=0.9, top_p=0.8)


@pytest.fixture(scope="module")
def setup():
    cfg = small_generator(
        image_vocab_size=64, grid_h=4, grid_w=4, max_text_len=16, max_history_len=8,
        dim=32, num_heads=2, enc_layers=1, dec_layers=2, mlp_dim=64,
    )  # fmt: skip
    model = g.make_generator(cfg)
    rng = np.random.default_rng(0)
    text_mask = np.arange(16)[None] < np.array([[5], [16], [9]])
    cond = {
        "text_ids": np.where(text_mask, rng.integers(8, 264, (B, 16)), 0).astype(np.int32),
        "text_mask": text_mask,
        "source_tokens": rng.integers(0, 64, (B, 4, 4)).astype(np.int32),
        "has_source": np.array([True, False, True]),
    }
    batch = dict(cond, target_tokens=cond["source_tokens"])
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    return model, params, cond


@pytest.mark.parametrize(
    "scfg",
    [GREEDY_CFG, TOPK_CFG, pytest.param(TOPP, marks=pytest.mark.slow)],
    ids=["greedy", "topk", "topp"],
)
def test_cached_equals_uncached(setup, scfg):
    model, params, cond = setup
    key = jax.random.key(7)
    cached = np.asarray(ar.sample(model, params, cond, key, scfg))
    uncached = np.asarray(ar.sample(model, params, cond, key, scfg, cached=False))
    assert cached.shape == (B, 4, 4) and cached.dtype == np.int32
    np.testing.assert_array_equal(cached, uncached)
    assert len(np.unique(cached)) > 1  # not a degenerate constant grid
    if scfg is TOPK_CFG:
        streamed = [(row, toks) for row, toks in ar.stream_rows(model, params, cond, key, scfg)]
        assert [row for row, _ in streamed] == [0, 1, 2, 3]
        assert all(t.shape == (B, 4) for _, t in streamed)
        np.testing.assert_array_equal(np.stack([t for _, t in streamed], 1), cached)
        # Deterministic for a seed, different for another seed.
        np.testing.assert_array_equal(np.asarray(ar.sample(model, params, cond, key, scfg)), cached)
        other = np.asarray(ar.sample(model, params, cond, jax.random.key(8), scfg))
        assert not np.array_equal(other, cached)


def test_guidance_changes_greedy_result(setup):
    model, params, cond = setup
    key = jax.random.key(0)
    plain = ar.sample(model, params, cond, key, ar.SamplingConfig(temperature=0.0))
    guided = ar.sample(model, params, cond, key, GREEDY_CFG)
    assert not np.array_equal(np.asarray(plain), np.asarray(guided))


def test_guide_logits():
    cond, uncond = jnp.array([[1.0, 3.0]]), jnp.array([[2.0, 2.0]])
    both = jnp.concatenate([cond, uncond])
    out = ar.guide_logits(both, ar.SamplingConfig(cfg_scale=3.0))
    np.testing.assert_allclose(out, [[-1.0, 5.0]])
    np.testing.assert_allclose(ar.guide_logits(cond, ar.SamplingConfig()), cond)


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.1]]))
    k2 = ar.filter_logits(logits, ar.SamplingConfig(top_k=2))
    assert np.isfinite(np.asarray(k2)).tolist() == [[True, True, False, False]]
    p = ar.filter_logits(logits, ar.SamplingConfig(top_p=0.7))  # 0.5 + 0.25 covers 0.7
    assert np.isfinite(np.asarray(p)).tolist() == [[True, True, False, False]]
    p1 = ar.filter_logits(logits, ar.SamplingConfig(top_p=0.4))
    assert np.isfinite(np.asarray(p1)).tolist() == [[True, False, False, False]]
    draws = jax.vmap(lambda k: ar.pick_tokens(logits, k, ar.SamplingConfig(top_k=2)))(
        jax.random.split(jax.random.key(0), 200)
    )
    assert set(np.unique(draws)) == {0, 1}
    greedy = ar.pick_tokens(logits, jax.random.key(0), ar.SamplingConfig(temperature=0.0))
    assert greedy.tolist() == [0]


@pytest.fixture(scope="module", params=["independent", "sequential", "shared", "above"])
def grouped(request):
    """2x2 blocks of tokens a position: a 4x4 grid in 4 decoder steps, with each head
    ("above": the independent head, the decoder also reading the block above)."""
    head = "independent" if request.param == "above" else request.param
    cfg = small_generator(
        image_vocab_size=64, grid_h=4, grid_w=4, max_text_len=16, max_history_len=0,
        dim=32, num_heads=2, enc_layers=1, dec_layers=2, mlp_dim=64, group=2,
        block_head=head, above_input=request.param == "above",
    )  # fmt: skip
    model = g.make_generator(cfg)
    rng = np.random.default_rng(1)
    cond = {
        "text_ids": rng.integers(8, 264, (B, 16)).astype(np.int32),
        "text_mask": np.ones((B, 16), bool),
        "source_tokens": rng.integers(0, 64, (B, 4, 4)).astype(np.int32),
        "has_source": np.array([True, False, True]),
    }
    params = jax.jit(model.init)(jax.random.key(0), dict(cond, target_tokens=cond["source_tokens"]))
    return model, params["params"], cond


def test_grouped_positions_cached_equals_uncached_and_streams_rows(grouped):
    model, params, cond = grouped
    assert model.cfg.num_positions == 4
    key = jax.random.key(3)
    for scfg in (GREEDY_CFG, TOPK_CFG):
        cached = np.asarray(ar.sample(model, params, cond, key, scfg))
        uncached = np.asarray(ar.sample(model, params, cond, key, scfg, cached=False))
        assert cached.shape == (B, 4, 4)
        np.testing.assert_array_equal(cached, uncached)
        assert len(np.unique(cached)) > 1
    rows = list(ar.stream_rows(model, params, cond, key, TOPK_CFG))
    assert [row for row, _ in rows] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.stack([t for _, t in rows], 1), cached)


def test_greedy_samples_are_the_argmax_of_the_training_logits(grouped):
    """Sampling and training read the model the same way: teacher-forced on its own
    greedy sample, the decoder's argmax is that sample, slot by slot (for the sequential
    head: each slot given the slots drawn before it)."""
    model, params, cond = grouped
    greedy = ar.SamplingConfig(temperature=0.0)
    tokens = np.asarray(ar.sample(model, params, cond, jax.random.key(0), greedy))
    logits = model.apply({"params": params}, dict(cond, target_tokens=tokens))
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1), tokens.reshape(B, -1))


def test_grouped_training_logits_follow_the_token_grid(grouped):
    """Logits come back in raster order: position p's slot k predicts token k of block p;
    a slot sees the slots before it in its own block only with the sequential head."""
    model, params, cond = grouped
    target = np.arange(16, dtype=np.int32).reshape(1, 4, 4).repeat(B, 0)
    batch = dict(cond, target_tokens=target)
    logits = model.apply({"params": params}, batch)
    assert logits.shape == (B, 16, 64)
    # Changing the token at grid (0, 1) (block 0, slot 1) can only move the logits of
    # later positions (blocks 1-3), never those of block 0's own tokens.
    changed = dict(batch, target_tokens=target.copy())
    changed["target_tokens"][:, 0, 1] = 63
    moved = np.abs(np.asarray(model.apply({"params": params}, changed) - logits)).max(-1)
    # Raster indices of block 0's slots 0-1 (its top row) and 2-3 (its bottom row).
    assert moved[:, [0, 1]].max() == 0.0  # slot 1's own logits and those before it
    if model.cfg.block_head == "sequential":
        assert moved[:, [4, 5]].min() > 0.0  # slots 2 and 3 condition on slot 1
    else:
        assert moved[:, [4, 5]].max() == 0.0
    assert moved[:, [2, 3, 6, 7]].max() > 0.0  # block 1 sees block 0 as its input


def test_class_conditional_model_samples_with_guidance():
    cfg = small_generator(
        image_vocab_size=64, grid_h=4, grid_w=4, dim=32, num_heads=2, dec_layers=2,
        mlp_dim=64, num_classes=10, use_source=False, max_history_len=0,
    )  # fmt: skip
    model = g.make_generator(cfg)
    cond = {"class_id": np.array([0, 3, 9], np.int32)}
    target = np.zeros((B, 4, 4), np.int32)
    params = jax.jit(model.init)(jax.random.key(0), dict(cond, target_tokens=target))["params"]
    assert "encoder" not in params
    key = jax.random.key(5)
    cached = np.asarray(ar.sample(model, params, cond, key, TOPK_CFG))
    np.testing.assert_array_equal(
        cached, np.asarray(ar.sample(model, params, cond, key, TOPK_CFG, cached=False))
    )
    loss, metrics = g.generator_loss(
        params, dict(cond, target_tokens=target), jax.random.key(1), model=model,
        caption_dropout=0.5,
    )  # fmt: skip
    assert np.isfinite(float(loss)) and 0.0 < float(metrics["caption_dropped"]) < 1.0


def test_decoder_inputs_hold_the_previous_block_and_the_block_above():
    cfg = small_generator(
        image_vocab_size=64, grid_h=4, grid_w=4, group=2, dim=32, above_input=True
    )
    target = np.arange(16, dtype=np.int32).reshape(1, 4, 4) % 64
    blocks = np.asarray(g.to_groups(jnp.asarray(target), 2))  # (1, 4 positions, 4 slots)
    inputs = np.asarray(g.decoder_inputs(cfg, jnp.asarray(blocks), jnp.array([cfg.bos_id])))
    assert inputs.shape == (1, 4, 8)
    np.testing.assert_array_equal(inputs[0, 0, :4], cfg.bos_id)
    np.testing.assert_array_equal(inputs[0, 1:, :4], blocks[0, :3])  # raster-previous
    np.testing.assert_array_equal(inputs[0, :2, 4:], cfg.mask_id)  # first row: none above
    np.testing.assert_array_equal(inputs[0, 2:, 4:], blocks[0, :2])  # the block above
    for t in range(4):  # the sampler's input at t, from the blocks written before t
        written = np.where(np.arange(4)[None, :, None] < t, blocks, 0)
        prev = inputs[:, t, :4]
        step = g.step_inputs(cfg, jnp.asarray(prev), jnp.asarray(written), t)
        np.testing.assert_array_equal(np.asarray(step), inputs[:, t])
