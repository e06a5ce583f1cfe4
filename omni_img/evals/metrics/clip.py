"""CLIP (ViT image tower + causal text transformer) in Flax, laid out like Hugging Face's
`CLIPModel`, so its safetensors checkpoints (ViT-B/32, ViT-B/16, ViT-L/14, ...) load by
renaming alone.

Module names mirror the checkpoint's (`text_model/encoder/layers_3/self_attn/q_proj`), so
`params_from_hf` only turns `layers.3` into `layers_3` and transposes weights. Pre-norm
blocks, quick-GELU (or exact GELU: `jax.nn.gelu` defaults to the tanh approximation, which
CLIP's "gelu" is not), attention in float32 with the full-precision matmuls.

Letters in names: B batch, L text length, N patches + 1, D width, P projection dim.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class TextConfig(TowerConfig):
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class VisionConfig(TowerConfig):
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    text: TextConfig
    vision: VisionConfig
    projection_dim: int = 512

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> CLIPConfig:
        """From a Hugging Face `CLIPConfig` dict (config.json). Missing keys take HF's
        defaults (ViT-B/32), since `save_pretrained` writes only what differs from them."""
        text = {
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            **config.get("text_config", {}),
        }
        vision = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            **config.get("vision_config", {}),
        }
        pick = lambda kind, d: {  # noqa: E731
            f.name: d[f.name] for f in dataclasses.fields(kind) if d.get(f.name) is not None
        }
        for tower in (text, vision):
            if tower.get("hidden_act") not in (None, *ACTIVATIONS):
                raise ValueError(f"unsupported CLIP activation {tower['hidden_act']!r}")
        return cls(
            text=TextConfig(**pick(TextConfig, text)),
            vision=VisionConfig(**pick(VisionConfig, vision)),
            projection_dim=config.get("projection_dim", 512),
        )


class Attention(nn.Module):
    config: TowerConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, causal: bool) -> jax.Array:
        cfg = self.config
        heads, dim = cfg.num_attention_heads, cfg.hidden_size
        dense = lambda name: nn.Dense(  # noqa: E731
            dim, name=name, dtype=self.dtype, param_dtype=self.param_dtype, precision=HIGHEST
        )
        split = lambda t: t.reshape(*t.shape[:-1], heads, dim // heads)  # noqa: E731
        q = split(dense("q_proj")(x_BxLxD)) * (dim // heads) ** -0.5
        k, v = split(dense("k_proj")(x_BxLxD)), split(dense("v_proj")(x_BxLxD))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=HIGHEST).astype(jnp.float32)
        if causal:
            length = x_BxLxD.shape[1]
            mask = jnp.tril(jnp.ones((length, length), bool))
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=HIGHEST)
        return dense("out_proj")(out.reshape(*out.shape[:2], dim))


class MLP(nn.Module):
    config: TowerConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=HIGHEST)
        x = nn.Dense(cfg.intermediate_size, name="fc1", **kw)(x)
        return nn.Dense(cfg.hidden_size, name="fc2", **kw)(ACTIVATIONS[cfg.hidden_act](x))


class EncoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    config: TowerConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, causal: bool) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x_BxLxD
        x = x + Attention(cfg, name="self_attn", **kw)(_norm(cfg, "layer_norm1")(x), causal)
        return x + MLP(cfg, name="mlp", **kw)(_norm(cfg, "layer_norm2")(x))


def _norm(cfg: TowerConfig, name: str) -> nn.LayerNorm:
    # Two-pass variance, as torch computes it: the one-pass E[x^2] - E[x]^2 loses digits.
    return nn.LayerNorm(cfg.layer_norm_eps, use_fast_variance=False, name=name)


class Encoder(nn.Module):
    """Transformer blocks `layers_0..n-1`."""

    config: TowerConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, causal: bool) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.config.num_hidden_layers):
            x_BxLxD = EncoderLayer(self.config, name=f"layers_{i}", **kw)(x_BxLxD, causal)
        return x_BxLxD


class TextTransformer(nn.Module):
    """ids (B, L) -> pooled (B, D): the final-norm state at the first end-of-text id."""

    config: TextConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids_BxL: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        length = ids_BxL.shape[1]
        tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="token_embedding", **kw)
        positions = nn.Embed(
            cfg.max_position_embeddings, cfg.hidden_size, name="position_embedding", **kw
        )
        x = tokens(ids_BxL) + positions(jnp.arange(length))[None]
        x = Encoder(cfg, name="encoder", **kw)(x, causal=True)
        x = _norm(cfg, "final_layer_norm")(x)
        if cfg.eos_token_id == 2:  # HF legacy configs: the end token is the largest id
            eos_at = jnp.argmax(ids_BxL, axis=-1)
        else:
            eos_at = jnp.argmax(ids_BxL == cfg.eos_token_id, axis=-1)
        # The causal mask makes padding after the end token irrelevant to this state.
        return jnp.take_along_axis(x, eos_at[:, None, None], axis=1)[:, 0]


class VisionTransformer(nn.Module):
    """pixels (B, H, W, C), normalised -> pooled (B, D): post-norm class token."""

    config: VisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels_BxHxWxC: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        p = cfg.patch_size
        patches = nn.Conv(
            cfg.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False,
            name="patch_embedding", precision=HIGHEST, **kw,
        )(pixels_BxHxWxC.astype(self.dtype))  # fmt: skip
        batch = patches.shape[0]
        x = patches.reshape(batch, -1, cfg.hidden_size)
        cls = self.param(
            "class_embedding", nn.initializers.normal(0.02), (cfg.hidden_size,), self.param_dtype
        )
        x = jnp.concatenate(
            [jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, x.shape[-1])), x], 1
        )
        positions = nn.Embed(x.shape[1], cfg.hidden_size, name="position_embedding", **kw)
        x = x + positions(jnp.arange(x.shape[1]))[None]
        x = _norm(cfg, "pre_layrnorm")(x)
        x = Encoder(cfg, name="encoder", **kw)(x, causal=False)
        return _norm(cfg, "post_layernorm")(x[:, 0])


class CLIP(nn.Module):
    """`image_features(pixels) -> (B, P)`, `text_features(ids) -> (B, P)` (not normalised)."""

    config: CLIPConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self) -> None:
        cfg, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.text_model = TextTransformer(cfg.text, **kw)
        self.vision_model = VisionTransformer(cfg.vision, **kw)
        proj = dict(use_bias=False, precision=HIGHEST, **kw)
        self.text_projection = nn.Dense(cfg.projection_dim, **proj)
        self.visual_projection = nn.Dense(cfg.projection_dim, **proj)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(2.6592), ())

    def image_features(self, pixels_BxHxWxC: jax.Array) -> jax.Array:
        return self.visual_projection(self.vision_model(pixels_BxHxWxC))

    def text_features(self, ids_BxL: jax.Array) -> jax.Array:
        return self.text_projection(self.text_model(ids_BxL))

    def __call__(self, pixels_BxHxWxC: jax.Array, ids_BxL: jax.Array):
        return self.image_features(pixels_BxHxWxC), self.text_features(ids_BxL)


# ---------------------------------------------------------------------------------------
# Hugging Face CLIPModel state dict -> Flax params.

_NORMS = ("layer_norm1", "layer_norm2", "final_layer_norm", "pre_layrnorm", "post_layernorm")
_EMBEDS = ("token_embedding", "position_embedding")


def _flax_path(name: str) -> tuple[list[str], str] | None:
    """`text_model.encoder.layers.3.self_attn.q_proj.weight` ->
    (["text_model", "encoder", "layers_3", "self_attn", "q_proj"], "weight")."""
    parts = name.split(".")
    if parts[-1] == "position_ids":
        return None
    parts = [p for p in parts if p != "embeddings"]  # HF's extra nesting level
    if "layers" in parts:
        i = parts.index("layers")
        parts[i : i + 2] = [f"layers_{parts[i + 1]}"]
    return parts[:-1], parts[-1]


def params_from_hf(state: dict[str, np.ndarray], config: CLIPConfig) -> dict[str, Any]:
    """HF `CLIPModel` tensors (names as in model.safetensors) -> Flax params of `CLIP`.

    Linear weights (out, in) -> kernels (in, out); the patch conv OIHW -> HWIO; layer norm
    weight -> scale. Raises ValueError for missing or wrongly-shaped tensors.
    """
    params: dict[str, Any] = {}
    for name, array in state.items():
        found = _flax_path(name)
        if found is None:
            continue
        path, leaf = found
        array = np.asarray(array, np.float32)
        module = path[-1] if path else ""
        if leaf == "weight":
            if module in _NORMS:
                leaf = "scale"
            elif module in _EMBEDS:
                leaf = "embedding"
            elif module == "patch_embedding":
                leaf, array = "kernel", np.transpose(array, (2, 3, 1, 0))
            else:
                leaf, array = "kernel", array.T
        node = params
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = array
    check_params(params, config)
    return params


def check_params(params: dict[str, Any], config: CLIPConfig) -> None:
    """Raise ValueError unless `params` has exactly the names and shapes `CLIP` expects."""
    expected = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    want = {
        jax.tree_util.keystr(p): a.shape for p, a in jax.tree_util.tree_leaves_with_path(expected)
    }
    got = {
        jax.tree_util.keystr(p): np.shape(a) for p, a in jax.tree_util.tree_leaves_with_path(params)
    }
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise ValueError(
                f"CLIP parameter {name}: expected {want.get(name)}, got {got.get(name)}"
            )


def init_params(config: CLIPConfig, rng: jax.Array) -> dict[str, Any]:
    """Random params (for tests and shape checks)."""
    size = config.vision.image_size
    pixels = jnp.zeros((1, size, size, config.vision.num_channels))
    ids = jnp.zeros((1, config.text.max_position_embeddings), jnp.int32)
    return CLIP(config).init(rng, pixels, ids)["params"]
