"""Autoregressive decoder over visual tokens in raster order, cross-attending to E.

Shape letters: B batch, N = h*w tokens of the target grid, L tokens fed in one call
(N when training, 1 per decode step), S encoder length, D width, V image vocabulary.

Input at position i is the token at i-1 (a BOS id, ``image_vocab_size``, at i = 0) plus
the learned 2-D position of cell i -- the cell being predicted -- so the model always
knows which row and column it writes. Self-attention is causal with 1-D RoPE over the
raster index (optional); every block cross-attends to E with E's padding mask.

Three entry points (``nn.Module`` methods, call with ``model.apply(..., method=...)``):
- ``__call__(tokens_in_BxN, e_BxSxD, e_mask_BxS) -> logits_BxNxV`` (float32): training;
- ``memory_kv(e_BxSxD) -> tuple[KVCache, ...]``: cross-attention keys/values per layer,
  computed once per prompt;
- ``step(tokens_in_BxL, index, memory_kvs, e_mask_BxS, caches) -> (logits_BxLxV, caches)``:
  incremental decoding at positions [index, index + L) with fixed-size self-attention
  caches from ``init_caches`` (index may be traced: usable inside ``lax`` loops).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_img.models.transformer import (
    ACT_BLD,
    Block,
    KVCache,
    Positions2D,
    RMSNorm,
    dense,
    embed_init,
    init_kv_cache,
)


def shift_right(target_BxN: jax.Array, bos_id: int) -> jax.Array:
    """Teacher-forcing inputs: [BOS, t_0, ..., t_{N-2}]."""
    bos = jnp.full((target_BxN.shape[0], 1), bos_id, target_BxN.dtype)
    return jnp.concatenate([bos, target_BxN[:, :-1]], axis=1)


class ARDecoder(nn.Module):
    """Causal transformer over an h×w grid of visual tokens with cross-attention."""

    image_vocab_size: int
    grid: tuple[int, int]
    dim: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    mlp_kind: str = "swiglu"
    rope: bool = True
    rope_theta: float = 10000.0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def bos_id(self) -> int:
        return self.image_vocab_size

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.token_embed = nn.Embed(
            # + BOS, rounded up so the vocab axis divides evenly over a tensor mesh axis
            -(-(self.image_vocab_size + 1) // 64) * 64,
            self.dim,
            embedding_init=nn.with_logical_partitioning(embed_init, ("vocab", "embed")),
            **kw,
        )
        self.positions = Positions2D(*self.grid, self.dim, self.param_dtype)
        block_cls = nn.remat(Block) if self.remat else Block
        self.layers = [
            block_cls(
                num_heads=self.num_heads,
                head_dim=self.dim // self.num_heads,
                mlp_dim=self.mlp_dim,
                mlp_kind=self.mlp_kind,
                causal=True,
                cross_attention=True,
                use_rope=self.rope,
                rope_theta=self.rope_theta,
                dim=self.dim,
                **kw,
            )
            for _ in range(self.num_layers)
        ]
        self.norm = RMSNorm(**kw)
        self.head = dense(self.image_vocab_size, ("embed", "vocab"), **kw)

    def _embed(self, tokens_in_BxL: jax.Array, start) -> jax.Array:
        l_len = tokens_in_BxL.shape[1]
        idx_L = start + jnp.arange(l_len)
        w = self.grid[1]
        x = self.token_embed(tokens_in_BxL) + self.positions(idx_L // w, idx_L % w)[None]
        return nn.with_logical_constraint(x.astype(self.dtype), ACT_BLD)

    def _logits(self, x_BxLxD: jax.Array) -> jax.Array:
        logits = self.head(self.norm(x_BxLxD)).astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))

    def __call__(self, tokens_in_BxN, e_BxSxD, e_mask_BxS) -> jax.Array:
        """Teacher-forced logits_BxNxV (float32) for inputs ``shift_right(target)``."""
        x = self._embed(tokens_in_BxN, 0)
        for layer in self.layers:
            x, _ = layer(x, e_BxSxD, e_mask_BxS)
        return self._logits(x)

    def memory_kv(self, e_BxSxD: jax.Array) -> tuple[KVCache, ...]:
        """Per-layer cross-attention keys/values of E (computed once per prompt)."""
        return tuple(layer.memory_kv(e_BxSxD) for layer in self.layers)

    def init_caches(self, batch: int) -> tuple[KVCache, ...]:
        """Empty self-attention caches with one slot per grid cell."""
        hk = (self.num_heads, self.dim // self.num_heads)
        return tuple(
            init_kv_cache(batch, self.num_tokens, *hk, self.dtype) for _ in range(self.num_layers)
        )

    def step(self, tokens_in_BxL, index, memory_kvs, e_mask_BxS, caches):
        """Logits_BxLxV for positions [index, index + L), and the updated caches."""
        x = self._embed(tokens_in_BxL, index)
        new_caches = []
        for layer, mkv, cache in zip(self.layers, memory_kvs, caches, strict=True):
            x, cache = layer(x, mkv, e_mask_BxS, cache=cache, cache_index=index)
            new_caches.append(cache)
        return self._logits(x), tuple(new_caches)
