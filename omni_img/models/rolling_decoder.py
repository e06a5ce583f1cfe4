"""Rolling band-wise diffusion decoder: the band denoiser and its training loss (its
config and the band geometry are in ``omni_img.models.bands``).

The H×W image is cut into N horizontal bands of H/N rows. A model call denoises a
*window* of n consecutive bands at once, each at its own noise level. Every band sees:
its noisy pixels (patchified, p×p patches → tokens), its noise level, its band index,
the visual tokens of the VQ grid (own embedding table, 2-D positions aligned with the
pixel patches), the text embeddings E with their padding mask, and the clean bands
above it through attention over their keys and values.

Diffusion: rectified flow. x_t = (1 − t)·x0 + t·ε with t ∈ [0, 1] (t = 1 is pure noise);
the network predicts the velocity v = ε − x0, and a sampler integrates dx/dt = v from
t = 1 to t = 0 (Euler: x_{t−Δ} = x_t − Δ·v̂).

Conv base (`conv_base`, on in the tiny config): the module holds a copy of the
tokenizer's conv decoder (frozen: its output is a stop-gradient, and the trainer marks
its parameters frozen) and refines it. Band g's *base* is the conv decoder's image of
the token grid with every row from `rows_needed(g)` on replaced by the last row band g
may see (so a band never depends on rows it may not attend to, and streaming stays
exact). The network sees its band's base as a second input and predicts the clean band
as base + residual (x0-parametrised; the velocity follows as (x_t − x̂0)/t), trained on
the x0 error. The residual starts at zero, so an untrained decoder reproduces the conv
decoder's image (up to the hidden rows), and training adds what the text and the clean
bands above can tell.

Attention structure (this is what makes caching, rolling and streaming exact):
- Self-attention is band-causal: a token of band g attends to the tokens of bands ≤ g.
  So a finished band's keys/values depend only on itself and the bands above it; they
  are computed once with the band clean (t = 0) and cached, and later bands attend to
  them (seamless stitching). During training the whole image is one call: the clean
  bands above the noisy one are the context, computed in the same pass.
- Cross-attention to the memory [visual tokens; text] is band-local-causal in the token
  rows: band g attends to token rows < `cfg.rows_needed(g)` (the rows covering it plus
  `lookahead_rows`), in training and in sampling alike. A streaming sampler can thus start
  band g before later token rows exist and gets the same image as a non-streamed one.

Shape letters: B batch, N bands in the image, n bands in one call, R band height in
pixels, W image width, P patch tokens per band, L = n·P tokens in a call, C = N·P cached
tokens, T = h·w visual tokens, S text length, M = T + S memory tokens, D model width,
E text width, H heads, K head dim, F = p·p·3 features of one patch, Y layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omni_img.models.bands import (
    RollingDecoderConfig,
    band_causal_mask,
    image_to_bands,
    memory_rows,
    patchify,
    rolling_decoder_config,
    rows_needed_traced,
    sincos_2d,
    timestep_embedding,
    unpatchify,
)
from omni_img.models.tokenizer import Tokenizer, as_unit_range
from omni_img.models.transformer import (
    ACT_BLD,
    ACT_BLHK,
    KVCache,
    Mlp,
    RMSNorm,
    SelfAttention,
    dense,
    embed_init,
)

Array = jax.Array
# With a conv base the model predicts x̂0 and the velocity is (x_t − x̂0)/t; t is kept
# from below here (clean context bands, t = 0, only lend their keys and values).
MIN_T = 1e-3


def make_rolling_decoder(
    cfg: RollingDecoderConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> RollingDecoder:
    """The Flax module for a (validated) config."""
    return RollingDecoder(cfg=rolling_decoder_config(cfg, **overrides))


# ----------------------------------------------------------------------------- layers


def _constrain_tokens(x_BxLxD: Array) -> Array:
    return nn.with_logical_constraint(x_BxLxD, ACT_BLD)


class BandCrossAttention(nn.Module):
    """Attention from band tokens to the memory [visual tokens; text] with a per-query mask
    (the shared CrossAttention takes a (B, S) padding mask; here each band sees a different
    number of token rows)."""

    cfg: RollingDecoderConfig

    def setup(self):
        c = self.cfg
        kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
        hk = (c.num_heads, c.dim // c.num_heads)
        self.query = dense(hk, ("embed", "heads", "head_dim"), name="query", **kw)
        self.key = dense(hk, ("embed", "heads", "head_dim"), name="key", **kw)
        self.value = dense(hk, ("embed", "heads", "head_dim"), name="value", **kw)
        self.out = dense(c.dim, ("heads", "head_dim", "embed"), in_ndim=2, name="out", **kw)

    def memory_kv(self, mem_BxMxD: Array) -> KVCache:
        """Keys and values of the memory, (B, M, H, K) each, computed once per image."""
        return KVCache(
            k=nn.with_logical_constraint(self.key(mem_BxMxD), ACT_BLHK),
            v=nn.with_logical_constraint(self.value(mem_BxMxD), ACT_BLHK),
        )

    def __call__(self, x_BxLxD: Array, mem: KVCache, mask_BxLxM: Array) -> Array:
        q_BxLxHxK = nn.with_logical_constraint(self.query(x_BxLxD), ACT_BLHK)
        y_BxLxHxK = jax.nn.dot_product_attention(
            q_BxLxHxK,
            mem.k.astype(q_BxLxHxK.dtype),
            mem.v.astype(q_BxLxHxK.dtype),
            mask=mask_BxLxM[:, None],
        )
        return self.out(nn.with_logical_constraint(y_BxLxHxK, ACT_BLHK))


class BandBlock(nn.Module):
    """Pre-norm block: band-causal self-attention (over a fixed-size cache of all bands in
    sampling), cross-attention to [visual tokens; text], GELU MLP. Self-attention and MLP
    are modulated by the noise level of each token's band (adaLN, zero-initialised gates),
    so clean context bands (t = 0) and noisy bands share the weights."""

    cfg: RollingDecoderConfig

    def setup(self):
        c = self.cfg
        kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
        self.ada = dense(
            6 * c.dim, ("embed", "mlp"), name="ada", kernel_init=nn.initializers.zeros_init(), **kw
        )
        self.norm_self = RMSNorm(**kw)
        self.attn = SelfAttention(c.num_heads, c.dim // c.num_heads, **kw)
        self.norm_cross = RMSNorm(**kw)
        self.cross = BandCrossAttention(c)
        self.norm_mlp = RMSNorm(**kw)
        self.mlp = Mlp(c.mlp_ratio * c.dim, kind="gelu", **kw)

    def memory_kv(self, mem_BxMxD: Array) -> KVCache:
        return self.cross.memory_kv(mem_BxMxD)

    def __call__(
        self, x_BxLxD, temb_BxnxD, self_mask_Bx1xLxS, cache, cache_index, mem, cross_mask_BxLxM
    ):
        """One block: returns the new tokens (B, L, D) and the cache with this call's keys
        and values written at `cache_index` (None without a cache)."""
        # The modulation depends on the band's noise level only: compute it per band, then
        # spread it over the band's P tokens (a per-token dense would cost P times more).
        p_tok = x_BxLxD.shape[1] // temb_BxnxD.shape[1]
        mods_BxnxD = jnp.split(self.ada(nn.silu(temb_BxnxD)), 6, axis=-1)
        mods = [jnp.repeat(m, p_tok, axis=1) for m in mods_BxnxD]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods
        y = self.norm_self(x_BxLxD) * (1 + scale_a) + shift_a
        y, cache = self.attn(y, mask=self_mask_Bx1xLxS, cache=cache, cache_index=cache_index)
        x_BxLxD = _constrain_tokens(x_BxLxD + gate_a * y)
        x_BxLxD = x_BxLxD + self.cross(self.norm_cross(x_BxLxD), mem, cross_mask_BxLxM)
        y = self.norm_mlp(x_BxLxD) * (1 + scale_m) + shift_m
        x_BxLxD = _constrain_tokens(x_BxLxD + gate_m * self.mlp(_constrain_tokens(y)))
        return x_BxLxD, cache


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class Memory:
    """What every band cross-attends to, encoded once per image.

    k, v: (Y, B, M, H, K) per-layer keys/values of [visual tokens; text].
    valid: (B, M) bool, False for text padding. The token-row limit per band is applied
    by `denoise` from the static layout (`memory_rows`).
    base: (B, N, R, W, 3) every band's conv-decoder base (see the module docstring), or
    None without a base.
    """

    k: Array
    v: Array
    valid: Array
    base: Array | None = None


jax.tree_util.register_dataclass(Memory, data_fields=["k", "v", "valid", "base"], meta_fields=[])


class RollingDecoder(nn.Module):
    """Band denoiser. `__call__` is the training pass over all N bands; the sampler uses
    `encode_memory` once per image and `denoise` once per step."""

    cfg: RollingDecoderConfig

    def setup(self):
        c, d = self.cfg, self.cfg.dim
        kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
        zeros = nn.initializers.zeros_init()
        self.patch_in = dense(d, ("conv_in", "embed"), name="patch_in", **kw)
        self.band_embed = nn.Embed(
            c.num_bands,
            d,
            embedding_init=nn.with_logical_partitioning(embed_init, (None, "embed")),
            name="band_embed",
            **kw,
        )
        self.time_in = dense(4 * d, (None, "mlp"), name="time_in", **kw)
        self.time_out = dense(d, ("mlp", "embed"), name="time_out", **kw)
        self.token_embed = nn.Embed(
            c.codebook_size,
            d,
            embedding_init=nn.with_logical_partitioning(embed_init, ("vocab", "embed")),
            name="token_embed",
            **kw,
        )
        self.text_proj = dense(d, (None, "embed"), name="text_proj", **kw)
        self.memory_norm = RMSNorm(**kw)
        self.blocks = [BandBlock(c, name=f"block_{i}") for i in range(c.num_layers)]
        if c.base_tokenizer is not None:
            self.base = Tokenizer(c.base_tokenizer, name="base")
            self.base_in = dense(d, ("conv_in", "embed"), name="base_in", **kw)
        self.final_ada = dense(2 * d, ("embed", "mlp"), name="final_ada", kernel_init=zeros, **kw)
        self.final_norm = RMSNorm(**kw)
        self.out = dense(c.patch_features, ("embed", None), name="out", kernel_init=zeros, **kw)

    # -- memory: visual tokens + text, once per image

    def encode_memory(self, tokens_Bxhxw: Array, text_BxSxE: Array, text_mask_BxS: Array) -> Memory:
        """Embeds the visual tokens (with 2-D positions) and the text; returns per-layer K/V."""
        c = self.cfg
        b = tokens_Bxhxw.shape[0]
        tok_BxTxD = self.token_embed(tokens_Bxhxw.reshape(b, -1).astype(jnp.int32))
        # Token centres in pixel coordinates: the same frame as the patch positions.
        gy = (np.arange(c.token_rows) + 0.5) * (c.image_height / c.token_rows)
        gx = (np.arange(c.token_cols) + 0.5) * (c.image_width / c.token_cols)
        yy, xx = np.meshgrid(gy, gx, indexing="ij")
        pos_TxD = sincos_2d(yy.ravel(), xx.ravel(), c.dim)
        tok_BxTxD = tok_BxTxD + pos_TxD.astype(tok_BxTxD.dtype)
        txt_BxSxD = self.text_proj(text_BxSxE.astype(jnp.dtype(c.dtype)))
        mem_BxMxD = self.memory_norm(jnp.concatenate([tok_BxTxD, txt_BxSxD], axis=1))
        kvs = [blk.memory_kv(_constrain_tokens(mem_BxMxD)) for blk in self.blocks]
        valid_BxM = jnp.concatenate(
            [jnp.ones(tok_BxTxD.shape[:2], bool), text_mask_BxS.astype(bool)], axis=1
        )
        base = None if c.base_tokenizer is None else self.band_bases(tokens_Bxhxw)
        return Memory(
            k=jnp.stack([kv.k for kv in kvs]),
            v=jnp.stack([kv.v for kv in kvs]),
            valid=valid_BxM,
            base=base,
        )

    def band_bases(self, tokens_Bxhxw: Array) -> Array:
        """(B, N, R, W, 3): band g of the conv decoder's image of the token grid with rows
        ≥ rows_needed(g) replaced by row rows_needed(g) − 1 (all N grids in one decode)."""
        c = self.cfg
        b, h, w = tokens_Bxhxw.shape
        rows_NxH = np.asarray(
            [np.minimum(np.arange(h), c.rows_needed(g) - 1) for g in range(c.num_bands)]
        )
        seen_BxNxhxw = tokens_Bxhxw.astype(jnp.int32)[:, rows_NxH]
        images = self.base.decode(seen_BxNxhxw.reshape(b * c.num_bands, h, w))
        images = images.reshape(b, c.num_bands, c.image_height, c.image_width, 3)
        r = c.band_height
        bands = [images[:, g, g * r : (g + 1) * r] for g in range(c.num_bands)]
        return jax.lax.stop_gradient(jnp.stack(bands, axis=1).astype(jnp.float32))

    # -- one denoising call over a window of bands

    def denoise(
        self,
        x_BxnxRxWx3: Array,
        t_Bxn: Array,
        band_ids_n: Array,
        memory: Memory,
        cache: KVCache | None = None,
    ) -> tuple[Array, KVCache | None]:
        """Predicts the velocity of n consecutive bands, each at its own noise level.

        x: (B, n, R, W, 3) noisy pixels; t: (B, n) noise levels (0 = clean); band_ids: (n,)
        int32 consecutive band indices (traced values, static n).
        cache: None (the call holds every band it needs, as in training) or the stacked
        per-layer self-attention cache of all N bands, k and v (Y, B, C, H, K), slot
        band·P + patch. The slots of the bands above `band_ids[0]` must hold those bands'
        clean keys/values; this call writes its own bands' keys/values into their slots.
        Returns velocity (B, n, R, W, 3) float32 and the updated cache (None without one).
        """
        c = self.cfg
        b, n = x_BxnxRxWx3.shape[:2]
        pr, pc = c.band_height // c.patch_size, c.image_width // c.patch_size
        p_tok = pr * pc
        band_ids_n = jnp.asarray(band_ids_n, jnp.int32)

        # Patch tokens with absolute 2-D pixel positions (the band index sets the row
        # offset) and a learned band embedding.
        x_BxLxF = patchify(x_BxnxRxWx3.astype(jnp.dtype(c.dtype)), c.patch_size)
        ys = (np.repeat(np.arange(pr), pc) + 0.5) * c.patch_size
        xs = (np.tile(np.arange(pc), pr) + 0.5) * c.patch_size
        y_nxP = band_ids_n[:, None].astype(jnp.float32) * c.band_height + ys[None]
        pos_LxD = sincos_2d(y_nxP.reshape(-1), jnp.tile(jnp.asarray(xs), n), c.dim)
        h_BxLxD = self.patch_in(x_BxLxF) + pos_LxD.astype(x_BxLxF.dtype)
        h_BxLxD = h_BxLxD + jnp.repeat(self.band_embed(band_ids_n), p_tok, axis=0)[None]
        if c.base_tokenizer is not None:
            base_BxnxRxWx3 = jax.lax.dynamic_slice_in_dim(memory.base, band_ids_n[0], n, axis=1)
            h_BxLxD = h_BxLxD + self.base_in(
                patchify(base_BxnxRxWx3.astype(jnp.dtype(c.dtype)), c.patch_size)
            )
        h_BxLxD = _constrain_tokens(h_BxLxD)

        temb_BxnxD = self.time_out(nn.silu(self.time_in(timestep_embedding(t_Bxn, c.dim))))

        # Self-attention: band-causal over absolute band indices. With a cache the keys
        # are its N·P slots (slots below this call's bands are hidden by SelfAttention).
        query_band_L = jnp.repeat(band_ids_n, p_tok)
        if cache is None:
            key_band_S, cache_index = query_band_L, None
        else:
            key_band_S = jnp.arange(c.num_bands * p_tok, dtype=jnp.int32) // p_tok
            cache_index = band_ids_n[0] * p_tok
        self_mask = band_causal_mask(query_band_L, key_band_S)[None, None]

        # Cross-attention: token rows < rows_needed(band); text where not padding.
        rows_M = jnp.asarray(memory_rows(c, memory.valid.shape[1] - c.token_rows * c.token_cols))
        need_L = jnp.repeat(rows_needed_traced(c, band_ids_n), p_tok)
        cross_BxLxM = (rows_M[None, :] < need_L[:, None])[None] & memory.valid[:, None, :]

        new_k, new_v = [], []
        for i, blk in enumerate(self.blocks):
            layer_cache = None if cache is None else KVCache(k=cache.k[i], v=cache.v[i])
            h_BxLxD, layer_cache = blk(
                h_BxLxD,
                temb_BxnxD,
                self_mask,
                layer_cache,
                cache_index,
                KVCache(k=memory.k[i], v=memory.v[i]),
                cross_BxLxM,
            )
            if layer_cache is not None:
                new_k.append(layer_cache.k)
                new_v.append(layer_cache.v)

        ada_Bxnx2D = self.final_ada(nn.silu(temb_BxnxD))
        shift, scale = (jnp.repeat(m, p_tok, axis=1) for m in jnp.split(ada_Bxnx2D, 2, axis=-1))
        y_BxLxF = self.out(self.final_norm(h_BxLxD) * (1 + scale) + shift)
        v_BxnxRxWx3 = unpatchify(
            y_BxLxF.astype(jnp.float32), n, c.band_height, c.image_width, c.patch_size
        )
        if c.base_tokenizer is not None:  # the output is a residual on the base: x̂0 → v̂
            x0_BxnxRxWx3 = base_BxnxRxWx3 + v_BxnxRxWx3
            t_Bxn111 = jnp.maximum(t_Bxn, MIN_T)[:, :, None, None, None]
            v_BxnxRxWx3 = (x_BxnxRxWx3.astype(jnp.float32) - x0_BxnxRxWx3) / t_Bxn111
        new_cache = None if cache is None else KVCache(k=jnp.stack(new_k), v=jnp.stack(new_v))
        return v_BxnxRxWx3, new_cache

    def __call__(self, x_BxNxRxWx3, t_BxN, tokens_Bxhxw, text_BxSxE, text_mask_BxS):
        """Training pass: all N bands in one call, band-causal, no cache. (B, N, R, W, 3)."""
        memory = self.encode_memory(tokens_Bxhxw, text_BxSxE, text_mask_BxS)
        ids = jnp.arange(self.cfg.num_bands, dtype=jnp.int32)
        return self.denoise(x_BxNxRxWx3, t_BxN, ids, memory)[0]


def init_rolling_decoder(
    cfg: RollingDecoderConfig, rng: Array, *, batch: int = 1, text_len: int = 8
) -> Any:
    """Initial params (boxed with logical axis names) from dummy inputs of the right shapes."""
    model = RollingDecoder(cfg)
    x = jnp.zeros((batch, cfg.num_bands, cfg.band_height, cfg.image_width, 3), jnp.float32)
    t = jnp.zeros((batch, cfg.num_bands), jnp.float32)
    tokens = jnp.zeros((batch, cfg.token_rows, cfg.token_cols), jnp.int32)
    text = jnp.zeros((batch, text_len, cfg.text_dim), jnp.float32)
    mask = jnp.ones((batch, text_len), bool)
    return model.init(rng, x, t, tokens, text, mask)


# ----------------------------------------------------------------------------- loss


def training_noise_levels(cfg: RollingDecoderConfig, rng: Array, batch: int) -> Array:
    """Per-example, per-band noise levels for one training batch, (B, N) in [0, 1].

    Each example is a snapshot of a sampler run: with probability `rolling_train_prob` a
    rolling window of W bands (staggered by 1/W), else a single band (sequential mode).
    A position τ ~ U(0, (N − 1)/w + 1) gives t_j = clip(1 + j/w − τ, 0, 1): bands with
    t = 0 are the clean context above, bands with t = 1 have not started (they are not
    attended by the bands above them, so their content does not matter), the rest are noisy.
    For w = 1 this is exactly "draw a band index g = ⌊τ⌋ and a level t ~ U(0, 1)".
    """
    n = cfg.num_bands
    r_mode, r_pos = jax.random.split(rng)
    rolling = jax.random.bernoulli(r_mode, cfg.rolling_train_prob, (batch,))
    w = jnp.where(rolling, float(cfg.window), 1.0)
    tau = jax.random.uniform(r_pos, (batch,)) * ((n - 1) / w + 1.0)
    j = jnp.arange(n, dtype=jnp.float32)
    return jnp.clip(1.0 + j[None] / w[:, None] - tau[:, None], 0.0, 1.0)


def rolling_loss(
    params: Any, batch: Mapping[str, Array], rng: Array, cfg: RollingDecoderConfig
) -> tuple[Array, dict[str, Array]]:
    """Rectified-flow loss on the noisy bands only.

    batch: image (B, H, W, 3) uint8 or float in [−1, 1]; tokens (B, h, w) int32 VQ grid;
    text_emb (B, S, E) float; text_mask (B, S) bool (True = real text position).
    Noise levels per example and band come from `training_noise_levels`; the clean bands
    above are the ground truth. The loss is the per-pixel MSE of the velocity (of the
    clean estimate x̂0 = x_t − t·v̂ with a conv base, whose model predicts x̂0), averaged
    over each example's noisy bands, then over the batch.
    Returns (loss, metrics) with metrics {loss, noisy_bands, x0_mse}.
    """
    x0_BxNxRxWx3 = image_to_bands(as_unit_range(batch["image"]), cfg.num_bands)
    b = x0_BxNxRxWx3.shape[0]
    r_t, r_eps = jax.random.split(rng)
    t_BxN = training_noise_levels(cfg, r_t, b)
    eps = jax.random.normal(r_eps, x0_BxNxRxWx3.shape, jnp.float32)
    tb = t_BxN[:, :, None, None, None]
    xt = (1.0 - tb) * x0_BxNxRxWx3 + tb * eps
    v_pred = RollingDecoder(cfg).apply(
        params, xt, t_BxN, batch["tokens"], batch["text_emb"], batch["text_mask"]
    )
    # Implied clean estimate x̂0 = x_t − t·v̂, on the same bands (a readable quality signal).
    x0_err = jnp.mean(jnp.square(xt - tb * v_pred - x0_BxNxRxWx3), axis=(2, 3, 4))
    if cfg.base_tokenizer is None:
        per_band_BxN = jnp.mean(jnp.square(v_pred - (eps - x0_BxNxRxWx3)), axis=(2, 3, 4))
    else:
        per_band_BxN = x0_err
    noisy_BxN = ((t_BxN > 0.0) & (t_BxN < 1.0)).astype(jnp.float32)
    count_B = jnp.maximum(noisy_BxN.sum(1), 1.0)
    loss = jnp.mean((per_band_BxN * noisy_BxN).sum(1) / count_B)
    metrics = {
        "loss": loss,
        "noisy_bands": jnp.mean(noisy_BxN.sum(1)),
        "x0_mse": jnp.mean((x0_err * noisy_BxN).sum(1) / count_B),
    }
    return loss, metrics
