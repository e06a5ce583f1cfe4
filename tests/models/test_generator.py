"""Generator: shapes, loss, caption dropout, logical partitioning, sharded == unsharded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from omni_img.errors import UserError
from omni_img.models import encoder as enc
from omni_img.models import generator as g
from omni_img.sharding.rules import DEFAULT_RULES
from tests.support.tiny_configs import small_generator, t2i_256_generator

# Small enough to compile in seconds; even sizes so every axis divides a 2-way mesh axis.
SMALL = dict(
    image_vocab_size=64, grid_h=4, grid_w=4, max_text_len=16, max_history_len=8,
    dim=32, num_heads=2, enc_layers=1, dec_layers=2, mlp_dim=64,
)  # fmt: skip


def small_cfg(**kw):
    return small_generator(**{**SMALL, **kw})


def make_batch(cfg, b=4, seed=0):
    rng = np.random.default_rng(seed)
    lt, lh = cfg.max_text_len, cfg.max_history_len
    text_mask = np.arange(lt)[None] < rng.integers(3, lt, (b, 1))
    hist_mask = np.arange(lh)[None] < rng.integers(0, lh, (b, 1))
    grid = (b, cfg.grid_h, cfg.grid_w)
    return {
        "text_ids": np.where(text_mask, rng.integers(8, 264, (b, lt)), 0).astype(np.int32),
        "text_mask": text_mask,
        "source_tokens": rng.integers(0, cfg.image_vocab_size, grid).astype(np.int32),
        "has_source": np.arange(b) % 2 == 0,
        "history_ids": np.where(hist_mask, rng.integers(8, 264, (b, lh)), 0).astype(np.int32),
        "history_mask": hist_mask,
        "target_tokens": rng.integers(0, cfg.image_vocab_size, grid).astype(np.int32),
    }


@pytest.fixture(scope="module")
def small():
    cfg = small_cfg()
    model = g.make_generator(cfg)
    batch = make_batch(cfg)
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    return cfg, model, batch, params


# Jitted once at module level so tests share compilations (eager flax is slow on 2 cores).
_loss = jax.jit(g.generator_loss, static_argnames=("model", "caption_dropout"))
_apply = jax.jit(lambda params, batch, model: model.apply({"params": params}, batch),
                 static_argnames="model")  # fmt: skip


def loss_fn(params, batch, rng=None, *, model, caption_dropout=0.0):
    return _loss(params, batch, rng, model=model, caption_dropout=caption_dropout)


def apply_fn(model, params, batch):
    return _apply(params, batch, model)


def optax_global_norm(tree):
    return optax.tree.norm(nn.unbox(tree))


def test_tiny_default_size_and_forward():
    cfg = small_generator()
    model = g.make_generator(cfg)
    batch = make_batch(cfg, b=2)
    variables = jax.eval_shape(model.init, jax.random.key(0), batch)
    n = g.count_params(variables["params"])
    assert 1.5e6 < n < 3e6, n
    logits = jax.eval_shape(model.apply, variables, batch)
    assert logits.shape == (2, 64, cfg.image_vocab_size) and logits.dtype == jnp.float32


def test_make_generator_accepts_config_dict_and_rejects_unknown_keys():
    cd = ml_collections.ConfigDict(vars(small_cfg()))
    assert g.make_generator(cd).cfg == small_cfg()
    with pytest.raises(UserError, match=r"unknown config key config\.model\.nope "):
        g.make_generator({"nope": 1})


def test_every_param_has_logical_axes(small):
    _, _, _, params = small
    leaves = jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nn.Partitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.Partitioned)
        assert len(leaf.names) == leaf.value.ndim
    names = {n for leaf in leaves for n in leaf.names}
    assert {"embed", "mlp", "heads", "head_dim", "vocab"} <= names


def test_loss_metrics_and_caption_dropout(small):
    _, model, batch, params = small
    loss, metrics = loss_fn(params, batch, model=model)
    assert np.isfinite(loss) and abs(float(loss) - np.log(64)) < 1.0
    assert 0.0 <= float(metrics["token_accuracy"]) <= 1.0
    assert set(metrics) == {"loss", "nll", "token_accuracy", "caption_dropped"}
    np.testing.assert_allclose(metrics["nll"], loss, rtol=1e-6)  # unweighted: the same
    all_dropped, m = loss_fn(params, batch, jax.random.key(1), model=model, caption_dropout=1.0)
    want, _ = loss_fn(params, g.unconditional(batch), model=model)
    np.testing.assert_allclose(all_dropped, want, rtol=1e-6)
    assert float(m["caption_dropped"]) == 1.0
    with pytest.raises(ValueError, match="needs an rng"):
        g.generator_loss(params, batch, model=model, caption_dropout=0.1)
    grads = jax.jit(jax.grad(lambda p: g.generator_loss(p, batch, model=model)[0]))(params)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(grads))
    assert float(optax_global_norm(grads)) > 0


def test_input_masking_hides_the_inputs_it_draws(small):
    """Hidden positions read the mask id instead of the previous token; with every input
    but the start hidden, nothing the decoder reads depends on the target any more."""
    _, model, batch, params = small
    changed = dict(batch, target_tokens=(batch["target_tokens"] + 1) % 64)
    b, p = batch["target_tokens"].shape[0], model.cfg.num_positions
    all_hidden = np.broadcast_to(np.arange(p) > 0, (b, p))
    hidden = jax.jit(lambda params, batch, h: model.apply({"params": params}, batch, h))
    np.testing.assert_array_equal(
        hidden(params, batch, all_hidden), hidden(params, changed, all_hidden)
    )
    assert not np.allclose(apply_fn(model, params, batch), apply_fn(model, params, changed))
    # In the loss: a rate of 0 is the plain loss, and masking needs an rng like dropout.
    masked = jax.jit(g.generator_loss, static_argnames=("model", "input_masking"))
    plain, _ = loss_fn(params, batch, model=model)
    some, _ = masked(params, batch, jax.random.key(2), model=model, input_masking=0.5)
    none, _ = masked(params, batch, jax.random.key(2), model=model, input_masking=0.0)
    np.testing.assert_allclose(none, plain, rtol=1e-6)
    assert abs(float(some) - float(plain)) > 1e-4
    with pytest.raises(ValueError, match="needs an rng"):
        g.generator_loss(params, batch, model=model, input_masking=0.1)


def test_foreground_weight_raises_the_share_of_tokens_off_the_background(small):
    """Tokens unlike their image's most common one weigh `foreground_weight`; 1 is the mean."""
    targets = np.zeros((2, 16), np.int32)
    targets[0, [3, 7]] = 5  # image 0: background 0, two object tokens
    targets[1, :] = 9
    targets[1, 0] = 2  # image 1: background 9, one object token
    weights = np.asarray(g.token_weights(jnp.asarray(targets), 64, 4.0))
    expected = np.ones((2, 16))
    expected[0, [3, 7]] = 4.0
    expected[1, 0] = 4.0
    np.testing.assert_array_equal(weights, expected)

    _, model, batch, params = small
    loss_fn_ = jax.jit(g.generator_loss, static_argnames=("model", "foreground_weight"))
    plain, plain_metrics = loss_fn_(params, batch, model=model)
    weighted, metrics = loss_fn_(params, batch, model=model, foreground_weight=4.0)
    np.testing.assert_allclose(metrics["nll"], plain, rtol=1e-6)  # nll stays the plain mean
    np.testing.assert_allclose(plain_metrics["loss"], plain, rtol=1e-6)
    assert abs(float(weighted) - float(plain)) > 1e-4


def test_loss_is_causal(small):
    """Changing target token j changes no logit at positions <= j."""
    _, model, batch, params = small
    logits = apply_fn(model, params, batch)
    changed = dict(batch, target_tokens=batch["target_tokens"].copy())
    changed["target_tokens"][:, 1, 2] = (changed["target_tokens"][:, 1, 2] + 1) % 64
    logits2 = apply_fn(model, params, changed)
    j = 1 * 4 + 2
    np.testing.assert_allclose(logits[:, : j + 1], logits2[:, : j + 1], atol=1e-6)
    assert not np.allclose(logits[:, j + 1], logits2[:, j + 1], atol=1e-6)


def test_encoder_input_layout_and_source_masking(small):
    cfg, model, batch, params = small
    inp = enc.encoder_inputs(
        jnp.asarray(batch["text_ids"]),
        jnp.asarray(batch["text_mask"]),
        grid=cfg.grid,
        max_history_len=cfg.max_history_len,
        source_tokens_Bxhxw=jnp.asarray(batch["source_tokens"]),
        has_source_B=jnp.asarray(batch["has_source"]),
        history_ids_BxLh=jnp.asarray(batch["history_ids"]),
        history_mask_BxLh=jnp.asarray(batch["history_mask"]),
    )
    assert inp.segments == {"history": (0, 8), "source": (8, 16), "text": (24, 16)}
    np.testing.assert_array_equal(inp.ids_BxS[:, 8:24], batch["source_tokens"].reshape(4, 16))
    np.testing.assert_array_equal(inp.mask_BxS[:, 8:24].all(1), batch["has_source"])
    # Examples without a source ignore whatever sits in source_tokens.
    other = dict(batch, source_tokens=(batch["source_tokens"] + 1) % 64)
    a = apply_fn(model, params, batch)
    b = apply_fn(model, params, other)
    no_src = ~batch["has_source"]
    np.testing.assert_allclose(a[no_src], b[no_src], atol=1e-5)
    assert not np.allclose(a[~no_src], b[~no_src], atol=1e-5)


def test_grouped_encoder_positions_keep_every_token():
    """4 bytes and one 2x2 source block a position: E is 4x shorter, yet a change of one
    byte or one source token still changes the output."""
    cfg = small_cfg(group=2, text_group=4)
    model = g.make_generator(cfg)
    batch = make_batch(cfg)
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    encode = jax.jit(lambda p, b: model.apply({"params": p}, b, method=g.Generator.encode))
    e, mask = encode(params, batch)
    assert e.shape == (4, cfg.encoder_length, cfg.dim)
    assert cfg.encoder_length == 8 // 4 + 16 // 4 + 16 // 4
    # A position is real if any byte in it is: the text mask, grouped.
    text_mask = batch["text_mask"].reshape(4, -1, 4).any(-1)
    np.testing.assert_array_equal(np.asarray(mask)[:, -4:], text_mask)
    flipped = dict(batch, text_ids=batch["text_ids"].copy())
    flipped["text_ids"][:, 1] = flipped["text_ids"][:, 1] % 250 + 9  # byte 1 of position 0
    e2, _ = encode(params, flipped)
    assert not np.allclose(np.asarray(e), np.asarray(e2))
    logits = apply_fn(model, params, batch)
    assert logits.shape == (4, 16, cfg.image_vocab_size)


def test_wrong_source_grid_is_rejected(small):
    _, model, batch, params = small
    bad = dict(batch, source_tokens=np.zeros((4, 3, 4), np.int32))
    with pytest.raises(ValueError, match="source token grid shape"):
        model.apply({"params": params}, bad)


def test_bf16_remat_variant_runs(small):
    _, _, batch, params = small
    model = g.make_generator(small_cfg(dtype="bfloat16", remat=True))
    loss, _ = loss_fn(params, batch, model=model)
    ref, _ = loss_fn(params, batch, model=g.make_generator(small_cfg()))
    assert abs(float(loss) - float(ref)) < 0.05


def test_sharded_forward_matches_unsharded(small):
    cfg, model, batch, params = small
    want = apply_fn(model, params, batch)
    devices = np.array(jax.devices()[:8]).reshape(2, 2, 2)
    mesh = Mesh(devices, ("data", "fsdp", "tensor"))
    rules = DEFAULT_RULES
    abstract = jax.eval_shape(model.init, jax.random.key(0), batch)
    specs = nn.get_partition_spec(abstract)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
        variables = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), batch)
        # A weight sharded on both fsdp and tensor really is split four ways.
        wi = variables["params"]["decoder"]["layers_0"]["mlp"]["wi_gate"]["kernel"].value
        assert wi.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
        got = jax.jit(model.apply)(variables, batch)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
        nn.unbox(variables["params"]),
        nn.unbox(params),
    )


def test_t2i_256_shapes_and_size():
    cfg = t2i_256_generator()
    model = g.make_generator(cfg)
    batch = {
        "text_ids": jax.ShapeDtypeStruct((2, 128), jnp.int32),
        "text_mask": jax.ShapeDtypeStruct((2, 128), jnp.bool_),
        "target_tokens": jax.ShapeDtypeStruct((2, 16, 16), jnp.int32),
    }
    variables = jax.eval_shape(model.init, jax.random.key(0), batch)
    dec = g.count_params(variables["params"]["decoder"])
    assert 2.8e8 < dec < 3.2e8, dec
    loss, metrics = jax.eval_shape(
        lambda p, b: g.generator_loss(p, b, jax.random.key(0), model=model, caption_dropout=0.1),
        variables["params"],
        batch,
    )
    assert loss.shape == () and loss.dtype == jnp.float32
