"""Transformer building blocks shared by the generator and the rolling decoder (flax.linen).

Shape letters used in names: B batch, L query length, S key/value length (a memory or a
KV cache), D model width, H heads, K head dim, F MLP hidden width, N tokens in a grid.
Masks are boolean, True = may attend.

Stable API (other modules build on it; extend, don't change):

- ``RMSNorm(eps=1e-6, dtype, param_dtype)``: ``x_BxLxD -> x_BxLxD`` (stats in fp32).
- ``Mlp(hidden_dim, kind="swiglu"|"gelu", dtype, param_dtype)``: ``x_BxLxD -> x_BxLxD``.
- ``KVCache(k, v)``: a pytree of two ``(B,S,H,K)`` arrays; ``init_kv_cache(B, S, H, K, dtype)``;
  ``cache.write(k_BxLxHxK, v_BxLxHxK, index)`` writes at a (traced) index with
  ``lax.dynamic_update_slice``, so it can be carried through ``lax.while_loop``/``scan``.
- ``SelfAttention(num_heads, head_dim, causal=False, use_rope=False, rope_theta, dtype,
  param_dtype)``: ``(x_BxLxD, *, positions_BxL=None, mask=None, cache=None,
  cache_index=None) -> (y_BxLxD, cache)``. Without a cache it attends over x (causal if
  set). With a cache it writes x's keys/values at ``cache_index`` and attends to every
  cache slot already written (``< cache_index + L``; causal additionally hides later slots).
  ``mask`` (broadcastable to ``(B,1,L,S)``) is and-ed in. RoPE positions default to
  ``cache_index + arange(L)`` (or ``arange(L)`` without a cache).
- ``CrossAttention(num_heads, head_dim, out_features=None, dtype, param_dtype)``:
  ``memory_kv(memory_BxSxD) -> KVCache`` (project a memory once),
  ``__call__(x_BxLxD, memory, memory_mask_BxS=None)``; ``memory`` is a ``(B,S,D)``
  array or a ``KVCache`` from ``memory_kv``.
- ``Block(num_heads, head_dim, mlp_dim, mlp_kind="swiglu", causal=False,
  cross_attention=False, use_rope=False, rope_theta, norm_eps, dim=None, dtype,
  param_dtype)`` (``dim`` = width of x, default heads × head_dim):
  pre-norm ``x + SelfAttn(norm x)``, ``+ CrossAttn(norm x, memory)``, ``+ Mlp(norm x)``.
  ``__call__(x_BxLxD, memory=None, memory_mask_BxS=None, positions_BxL=None, mask=None,
  cache=None, cache_index=None) -> (x_BxLxD, cache)``; ``memory_kv(memory_BxSxD)`` gives
  the cross-attention KVCache to reuse across decode steps. Wrap in ``nn.remat`` freely.
- ``apply_rope(x_BxLxHxK, positions_BxL, theta)``: 1-D rotary embedding (half-split pairs).
- ``Positions2D(height, width, features)``: learned row + column embeddings;
  ``__call__(rows_..., cols_...) -> (..., features)``; ``grid_rows_cols(h, w)`` gives the
  raster-order row/column indices of an h×w grid.
- ``Dense(features, axes, in_ndim=1)`` / ``dense(...)`` / ``embed_init``: linear maps and
  initialisers that attach logical axis names.

Every parameter carries logical axis names (``embed, mlp, heads, head_dim, vocab, norm``)
and activations are constrained with ``act_batch, act_length, act_embed, act_mlp,
act_heads`` (see ``omni_img/sharding/rules.py``); outside a mesh + rules context these are
no-ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

Dtype = Any

ACT_BLD = ("act_batch", "act_length", "act_embed")
ACT_BLF = ("act_batch", "act_length", "act_mlp")
ACT_BLHK = ("act_batch", "act_length", "act_heads", None)

default_kernel_init = nn.initializers.xavier_uniform()
embed_init = nn.initializers.normal(stddev=0.02)


def _flat_fan_init(init, in_ndim: int):
    """Initialise a (in..., out...) kernel as the 2-D (prod in, prod out) matrix it acts as."""

    def f(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:in_ndim])
        return init(key, (fan_in, math.prod(shape) // fan_in), dtype).reshape(shape)

    return f


class Dense(nn.Module):
    """Bias-free linear map contracting the last ``in_ndim`` axes of x into ``features``.

    Unlike ``nn.DenseGeneral`` the kernel is created in its final (in..., out...) shape,
    so its logical axis names apply from the start (a sharding constraint during a
    sharded init would otherwise see a flattened 2-D kernel).
    """

    features: tuple[int, ...]
    axes: tuple[str | None, ...]
    in_ndim: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = tuple(x.shape[x.ndim - self.in_ndim :]) + tuple(self.features)
        init = nn.with_logical_partitioning(
            _flat_fan_init(self.kernel_init, self.in_ndim), self.axes
        )
        kernel = self.param("kernel", init, shape, self.param_dtype)
        contract = (tuple(range(x.ndim - self.in_ndim, x.ndim)), tuple(range(self.in_ndim)))
        return jax.lax.dot_general(
            x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ()))
        )


def dense(
    features: int | Sequence[int],
    axes: tuple[str | None, ...],
    *,
    in_ndim: int = 1,
    in_axis: int | Sequence[int] | None = None,
    dtype: Dtype,
    param_dtype: Dtype,
    name: str | None = None,
    kernel_init=default_kernel_init,
) -> Dense:
    """A bias-free ``Dense`` whose kernel carries the logical axis names ``axes``.

    ``in_ndim``: how many trailing axes of x are contracted; ``in_axis`` (-1 or
    (-2, -1), as in ``nn.DenseGeneral``) is accepted for the same thing.
    """
    if in_axis is not None:
        in_ndim = 1 if isinstance(in_axis, int) else len(tuple(in_axis))
    features = (features,) if isinstance(features, int) else tuple(features)
    return Dense(features, axes, in_ndim, dtype, param_dtype, kernel_init, name=name)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale; statistics in float32."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        scale_D = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            (x_BxLxD.shape[-1],),
            self.param_dtype,
        )
        x = x_BxLxD.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return (x * scale_D.astype(jnp.float32)).astype(self.dtype)


MLP_KINDS = ("swiglu", "gelu")


class Mlp(nn.Module):
    """Feed-forward layer: SwiGLU (three matrices) or GELU (two)."""

    hidden_dim: int
    kind: str = "swiglu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = x_BxLxD.shape[-1]
        if self.kind == "swiglu":
            gate_BxLxF = dense(self.hidden_dim, ("embed", "mlp"), name="wi_gate", **kw)(x_BxLxD)
            up_BxLxF = dense(self.hidden_dim, ("embed", "mlp"), name="wi_up", **kw)(x_BxLxD)
            h_BxLxF = nn.silu(gate_BxLxF) * up_BxLxF
        elif self.kind == "gelu":
            h_BxLxF = nn.gelu(dense(self.hidden_dim, ("embed", "mlp"), name="wi", **kw)(x_BxLxD))
        else:
            raise ValueError(f"unknown mlp kind {self.kind!r} (one of {MLP_KINDS})")
        h_BxLxF = nn.with_logical_constraint(h_BxLxF, ACT_BLF)
        return dense(d, ("mlp", "embed"), name="wo", **kw)(h_BxLxF)


# --------------------------------------------------------------------------- KV cache


@struct.dataclass
class KVCache:
    """Keys and values of shape (B, S, H, K) for S fixed slots."""

    k: jax.Array
    v: jax.Array

    def write(self, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array, index) -> KVCache:
        """Write L new entries at slots [index, index + L); index may be traced."""
        k = jax.lax.dynamic_update_slice_in_dim(self.k, k_BxLxHxK.astype(self.k.dtype), index, 1)
        v = jax.lax.dynamic_update_slice_in_dim(self.v, v_BxLxHxK.astype(self.v.dtype), index, 1)
        return KVCache(k=k, v=v)


def init_kv_cache(
    batch: int, length: int, num_heads: int, head_dim: int, dtype: Dtype = jnp.float32
) -> KVCache:
    """An all-zero cache with ``length`` slots."""
    shape = (batch, length, num_heads, head_dim)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))


# --------------------------------------------------------------------------- positions


def apply_rope(x_BxLxHxK: jax.Array, positions_BxL: jax.Array, theta: float = 10000.0):
    """Rotary position embedding over the last axis (pairs = first half with second half)."""
    k = x_BxLxHxK.shape[-1]
    half = k // 2
    freq_h = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BxLxh = positions_BxL.astype(jnp.float32)[..., None] * freq_h
    sin = jnp.sin(angle_BxLxh)[:, :, None, :]
    cos = jnp.cos(angle_BxLxh)[:, :, None, :]
    x = x_BxLxHxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., 2 * half :]], -1)
    return out.astype(x_BxLxHxK.dtype)


def grid_rows_cols(height: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Row and column index (each shape (height*width,)) of each cell in raster order."""
    idx_N = jnp.arange(height * width)
    return idx_N // width, idx_N % width


class Positions2D(nn.Module):
    """Learned 2-D positions: a row embedding plus a column embedding."""

    height: int
    width: int
    features: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rows: jax.Array, cols: jax.Array) -> jax.Array:
        """rows, cols: int arrays of any equal shape (...) -> float (..., features)."""
        init = nn.with_logical_partitioning(embed_init, (None, "embed"))
        row_table = self.param("rows", init, (self.height, self.features), self.param_dtype)
        col_table = self.param("cols", init, (self.width, self.features), self.param_dtype)
        return jnp.take(row_table, rows, axis=0) + jnp.take(col_table, cols, axis=0)


# --------------------------------------------------------------------------- attention


def _attend_one_query(q_Bx1xHxK, k_BxSxHxK, v_BxSxHxK, mask) -> jax.Array:
    """Attention for a single query (a decode step) as multiply + reduce.

    A batched dot here makes XLA (CPU at least) transpose the whole (B,S,H,K) cache into
    its preferred operand layout on every step: a copy that grows with S. Multiply +
    reduce reads each cache entry once, in place. Same numerics as
    ``jax.nn.dot_product_attention``: fp32 logits and softmax, probs cast to v's dtype.
    """
    scale = q_Bx1xHxK.shape[-1] ** -0.5
    logits_BxSxH = jnp.sum(
        q_Bx1xHxK.astype(jnp.float32) * k_BxSxHxK.astype(jnp.float32), axis=-1
    ) * jnp.float32(scale)
    if mask is not None:
        mask_BxS = mask.reshape(mask.shape[0], mask.shape[-1])
        big_negative = jnp.float32(-0.7 * float(jnp.finfo(jnp.float32).max))
        logits_BxSxH = jnp.where(mask_BxS[:, :, None], logits_BxSxH, big_negative)
    probs_BxSxH = jax.nn.softmax(logits_BxSxH, axis=1).astype(v_BxSxHxK.dtype)
    y_BxHxK = jnp.sum(probs_BxSxH[..., None] * v_BxSxHxK, axis=1)
    return y_BxHxK[:, None].astype(q_Bx1xHxK.dtype)


def _attend(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask) -> jax.Array:
    """jax.nn.dot_product_attention with a 4-D boolean mask (softmax is fp32 inside)."""
    if mask is not None:
        b = q_BxLxHxK.shape[0]
        mask = jnp.broadcast_to(
            mask, (max(b, mask.shape[0]), 1, q_BxLxHxK.shape[1], k_BxSxHxK.shape[1])
        )
    if q_BxLxHxK.shape[1] == 1:
        return _attend_one_query(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask)
    return jax.nn.dot_product_attention(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask)


class SelfAttention(nn.Module):
    """Multi-head self-attention, optionally causal, with RoPE and a fixed-size KV cache."""

    num_heads: int
    head_dim: int
    causal: bool = False
    use_rope: bool = False
    rope_theta: float = 10000.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_BxLxD: jax.Array,
        *,
        positions_BxL: jax.Array | None = None,
        mask: jax.Array | None = None,
        cache: KVCache | None = None,
        cache_index: jax.Array | int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hk = (self.num_heads, self.head_dim)
        b, l_len, d = x_BxLxD.shape
        q_BxLxHxK = dense(hk, ("embed", "heads", "head_dim"), name="query", **kw)(x_BxLxD)
        k_BxLxHxK = dense(hk, ("embed", "heads", "head_dim"), name="key", **kw)(x_BxLxD)
        v_BxLxHxK = dense(hk, ("embed", "heads", "head_dim"), name="value", **kw)(x_BxLxD)
        q_BxLxHxK = nn.with_logical_constraint(q_BxLxHxK, ACT_BLHK)
        k_BxLxHxK = nn.with_logical_constraint(k_BxLxHxK, ACT_BLHK)
        v_BxLxHxK = nn.with_logical_constraint(v_BxLxHxK, ACT_BLHK)

        start = 0 if cache is None else cache_index
        q_pos_L = start + jnp.arange(l_len)
        if self.use_rope:
            if positions_BxL is None:
                positions_BxL = jnp.broadcast_to(q_pos_L, (b, l_len))
            q_BxLxHxK = apply_rope(q_BxLxHxK, positions_BxL, self.rope_theta)
            k_BxLxHxK = apply_rope(k_BxLxHxK, positions_BxL, self.rope_theta)

        if cache is None:
            keys, values = k_BxLxHxK, v_BxLxHxK
            k_pos_S = jnp.arange(l_len)
            visible_LxS = None
        else:
            cache = cache.write(k_BxLxHxK, v_BxLxHxK, cache_index)
            keys, values = cache.k, cache.v
            k_pos_S = jnp.arange(keys.shape[1])
            # Slots past the ones written so far hold zeros (or stale rows): never attend.
            visible_LxS = jnp.broadcast_to(k_pos_S[None, :] < start + l_len, (l_len, len(k_pos_S)))
        if self.causal:
            causal_LxS = k_pos_S[None, :] <= q_pos_L[:, None]
            visible_LxS = causal_LxS if visible_LxS is None else visible_LxS & causal_LxS
        full = None if visible_LxS is None else visible_LxS[None, None]
        if mask is not None:
            full = mask if full is None else jnp.logical_and(full, mask)
        y_BxLxHxK = _attend(q_BxLxHxK, keys.astype(self.dtype), values.astype(self.dtype), full)
        y_BxLxHxK = nn.with_logical_constraint(y_BxLxHxK, ACT_BLHK)
        out = dense(d, ("heads", "head_dim", "embed"), in_ndim=2, name="out", **kw)
        return out(y_BxLxHxK), cache


class CrossAttention(nn.Module):
    """Multi-head attention from x to a memory (e.g. the encoder output E) with padding."""

    num_heads: int
    head_dim: int
    out_features: int | None = None  # the width D of x; default num_heads * head_dim
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hk = (self.num_heads, self.head_dim)
        d = self.out_features or self.num_heads * self.head_dim
        self.query = dense(hk, ("embed", "heads", "head_dim"), **kw)
        self.key = dense(hk, ("embed", "heads", "head_dim"), **kw)
        self.value = dense(hk, ("embed", "heads", "head_dim"), **kw)
        self.out = dense(d, ("heads", "head_dim", "embed"), in_ndim=2, **kw)

    def memory_kv(self, memory_BxSxD: jax.Array) -> KVCache:
        """Project the memory to keys/values once (reused at every decode step)."""
        k = nn.with_logical_constraint(self.key(memory_BxSxD), ACT_BLHK)
        v = nn.with_logical_constraint(self.value(memory_BxSxD), ACT_BLHK)
        return KVCache(k=k, v=v)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        memory: jax.Array | KVCache,
        memory_mask_BxS: jax.Array | None = None,
    ) -> jax.Array:
        kv = memory if isinstance(memory, KVCache) else self.memory_kv(memory)
        q_BxLxHxK = nn.with_logical_constraint(self.query(x_BxLxD), ACT_BLHK)
        mask = None if memory_mask_BxS is None else memory_mask_BxS[:, None, None, :]
        y_BxLxHxK = _attend(q_BxLxHxK, kv.k.astype(self.dtype), kv.v.astype(self.dtype), mask)
        y_BxLxHxK = nn.with_logical_constraint(y_BxLxHxK, ACT_BLHK)
        return self.out(y_BxLxHxK)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP."""

    num_heads: int
    head_dim: int
    mlp_dim: int
    mlp_kind: str = "swiglu"
    causal: bool = False
    cross_attention: bool = False
    use_rope: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    dim: int | None = None  # the width D of x; default num_heads * head_dim
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.norm_attn = RMSNorm(self.norm_eps, **kw)
        self.attn = SelfAttention(
            self.num_heads,
            self.head_dim,
            causal=self.causal,
            use_rope=self.use_rope,
            rope_theta=self.rope_theta,
            **kw,
        )
        if self.cross_attention:
            self.norm_cross = RMSNorm(self.norm_eps, **kw)
            self.cross = CrossAttention(self.num_heads, self.head_dim, self.dim, **kw)
        self.norm_mlp = RMSNorm(self.norm_eps, **kw)
        self.mlp = Mlp(self.mlp_dim, self.mlp_kind, **kw)

    def memory_kv(self, memory_BxSxD: jax.Array) -> KVCache:
        """Cross-attention keys/values of a memory, to pass as ``memory`` at decode time."""
        return self.cross.memory_kv(memory_BxSxD)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        memory: jax.Array | KVCache | None = None,
        memory_mask_BxS: jax.Array | None = None,
        positions_BxL: jax.Array | None = None,
        mask: jax.Array | None = None,
        cache: KVCache | None = None,
        cache_index: jax.Array | int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ACT_BLD)
        y, cache = self.attn(
            self.norm_attn(x_BxLxD),
            positions_BxL=positions_BxL,
            mask=mask,
            cache=cache,
            cache_index=cache_index,
        )
        x_BxLxD = x_BxLxD + y
        if self.cross_attention:
            if memory is None:
                raise ValueError("this Block has cross-attention: pass memory")
            x_BxLxD = x_BxLxD + self.cross(self.norm_cross(x_BxLxD), memory, memory_mask_BxS)
        x_BxLxD = x_BxLxD + self.mlp(self.norm_mlp(x_BxLxD))
        return nn.with_logical_constraint(x_BxLxD, ACT_BLD), cache
