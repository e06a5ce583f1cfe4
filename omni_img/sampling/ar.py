"""Autoregressive sampling of visual tokens: KV-cached jitted loop, CFG, top-k / top-p.

Shape letters: B batch (prompts), C = 2B with classifier-free guidance (conditional rows
then unconditional rows) else B, N = h*w tokens, S encoder length, V image vocabulary.

- ``sample(model, params, cond, rng, scfg)``: one jitted call; the prompt side is encoded
  and projected to cross-attention keys/values once, then a ``lax.fori_loop`` writes one
  token per step into a fixed-size self-attention KV cache (no Python loop per token).
- ``sample(..., cached=False)``: the reference: every step recomputes the decoder over
  the whole (padded, causally masked) prefix. Same per-step randomness, so it must agree
  with the cached sampler token for token; used by tests and the benchmark.
- ``stream_rows(...)``: yields each finished token row; a jitted loop over one row is
  called once per row from Python with the cache carried between calls.

``cond`` is the generator's batch dict without ``target_tokens`` (see
``omni_img.models.generator``). ``params`` is the model's ``params`` collection.
Step t draws with ``fold_in(rng, t)``, so a seed fixes the result.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from omni_img.models.ar_decoder import shift_right
from omni_img.models.generator import Generator, init_caches, unconditional
from omni_img.models.transformer import KVCache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 = greedy; top_k 0 = off; top_p 1 = off; cfg_scale 1 = no guidance."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


DEFAULT_SAMPLING = SamplingConfig()

# --------------------------------------------------------------------------- token choice


def guide_logits(logits_CxV: jax.Array, scfg: SamplingConfig) -> jax.Array:
    """CFG: uncond + scale * (cond - uncond) over the two halves; identity without CFG."""
    if not scfg.guided:
        return logits_CxV
    cond_BxV, uncond_BxV = jnp.split(logits_CxV, 2, axis=0)
    return uncond_BxV + scfg.cfg_scale * (cond_BxV - uncond_BxV)


def filter_logits(logits_BxV: jax.Array, scfg: SamplingConfig) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus); filtered entries become -inf."""
    logits_BxV = logits_BxV.astype(jnp.float32) / scfg.temperature
    v = logits_BxV.shape[-1]
    if 0 < scfg.top_k < v:
        kth_Bx1 = jax.lax.top_k(logits_BxV, scfg.top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
    if scfg.top_p < 1.0:
        sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        # Keep a token while the mass strictly before it is < top_p (the first always stays).
        keep_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV < scfg.top_p
        last_Bx1 = jnp.sum(keep_BxV, axis=-1, keepdims=True) - 1
        cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, last_Bx1, axis=-1)
        logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
    return logits_BxV


def pick_tokens(logits_BxV: jax.Array, key: jax.Array, scfg: SamplingConfig) -> jax.Array:
    """Next token per row (int32, shape (B,)): argmax if temperature is 0, else a draw."""
    if scfg.temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits_BxV, scfg)).astype(jnp.int32)


def _choose(logits_CxV, rng, t, scfg):
    return pick_tokens(guide_logits(logits_CxV, scfg), jax.random.fold_in(rng, t), scfg)


def _double(x_B, scfg):
    return jnp.concatenate([x_B, x_B], axis=0) if scfg.guided else x_B


# --------------------------------------------------------------------------- decoding


class DecodeState(NamedTuple):
    """Everything the cached loop carries; a pytree, so it passes between jitted calls."""

    caches: tuple[KVCache, ...]  # self-attention, (C, N, H, K) per layer
    memory_kvs: tuple[KVCache, ...]  # cross-attention keys/values of E, (C, S, H, K)
    e_mask_CxS: jax.Array
    tokens_BxN: jax.Array  # int32; positions not yet written hold 0
    prev_B: jax.Array  # int32: the last token written (BOS before the first)
    rng: jax.Array


def _encode(model: Generator, params, cond, scfg):
    cond = {k: jnp.asarray(v) for k, v in cond.items() if k != "target_tokens"}
    if scfg.guided:
        uncond = unconditional(cond)
        cond = {k: jnp.concatenate([cond[k], uncond[k]], axis=0) for k in cond}
    return model.apply({"params": params}, cond, method=Generator.encode)


def _start(params, cond, rng, *, model: Generator, scfg: SamplingConfig) -> DecodeState:
    cfg = model.cfg
    e_CxSxD, e_mask_CxS = _encode(model, params, cond, scfg)
    memory_kvs = model.apply({"params": params}, e_CxSxD, method=Generator.memory_kv)
    b = cond["text_ids"].shape[0]
    return DecodeState(
        caches=init_caches(cfg, e_CxSxD.shape[0]),
        memory_kvs=memory_kvs,
        e_mask_CxS=e_mask_CxS,
        tokens_BxN=jnp.zeros((b, cfg.num_tokens), jnp.int32),
        prev_B=jnp.full((b,), cfg.bos_id, jnp.int32),
        rng=rng,
    )


def _advance(params, state: DecodeState, start, *, model, scfg, count: int) -> DecodeState:
    """Write tokens [start, start + count) with the KV cache."""

    def body(i, s: DecodeState) -> DecodeState:
        t = start + i
        logits_Cx1xV, caches = model.apply(
            {"params": params},
            _double(s.prev_B, scfg)[:, None],
            t,
            s.memory_kvs,
            s.e_mask_CxS,
            s.caches,
            method=Generator.step,
        )
        tok_B = _choose(logits_Cx1xV[:, 0], s.rng, t, scfg)
        tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens_BxN, tok_B[:, None], t, 1)
        return s._replace(caches=caches, tokens_BxN=tokens, prev_B=tok_B)

    return jax.lax.fori_loop(0, count, body, state)


@functools.partial(jax.jit, static_argnames=("model", "scfg"))
def _sample_cached(params, cond, rng, *, model: Generator, scfg: SamplingConfig):
    state = _start(params, cond, rng, model=model, scfg=scfg)
    state = _advance(params, state, 0, model=model, scfg=scfg, count=model.cfg.num_tokens)
    return state.tokens_BxN


@functools.partial(jax.jit, static_argnames=("model", "scfg"))
def _sample_uncached(params, cond, rng, *, model: Generator, scfg: SamplingConfig):
    cfg = model.cfg
    e_CxSxD, e_mask_CxS = _encode(model, params, cond, scfg)
    b = cond["text_ids"].shape[0]

    def body(t, tokens_BxN):
        inputs_CxN = _double(shift_right(tokens_BxN, cfg.bos_id), scfg)
        logits_CxNxV = model.apply(
            {"params": params},
            inputs_CxN,
            e_CxSxD,
            e_mask_CxS,
            method=lambda m, *args: m.decoder(*args),
        )
        logits_CxV = jax.lax.dynamic_index_in_dim(logits_CxNxV, t, axis=1, keepdims=False)
        tok_B = _choose(logits_CxV, rng, t, scfg)
        return jax.lax.dynamic_update_slice_in_dim(tokens_BxN, tok_B[:, None], t, 1)

    return jax.lax.fori_loop(0, cfg.num_tokens, body, jnp.zeros((b, cfg.num_tokens), jnp.int32))


def sample(
    model: Generator,
    params: Any,
    cond: Mapping[str, Any],
    rng: jax.Array,
    scfg: SamplingConfig = DEFAULT_SAMPLING,
    *,
    cached: bool = True,
) -> jax.Array:
    """Token grids ``(B, h, w)`` int32 for a conditioning dict (one jitted call).

    ``cached=False`` recomputes the whole prefix at every step (reference, slow).
    """
    fn = _sample_cached if cached else _sample_uncached
    tokens_BxN = fn(params, dict(cond), rng, model=model, scfg=scfg)
    return tokens_BxN.reshape(tokens_BxN.shape[0], *model.cfg.grid)


_start_jit = jax.jit(_start, static_argnames=("model", "scfg"))
_advance_jit = jax.jit(_advance, static_argnames=("model", "scfg", "count"), donate_argnums=1)


def stream_rows(
    model: Generator,
    params: Any,
    cond: Mapping[str, Any],
    rng: jax.Array,
    scfg: SamplingConfig = DEFAULT_SAMPLING,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row, tokens (B, w) int32 numpy)`` for each token row as it finishes.

    Gives the same tokens as ``sample(..., cached=True)`` for the same seed.
    """
    h, w = model.cfg.grid
    state = _start_jit(params, dict(cond), rng, model=model, scfg=scfg)
    for row in range(h):
        start = jnp.asarray(row * w, jnp.int32)
        state = _advance_jit(params, state, start, model=model, scfg=scfg, count=w)
        yield row, np.asarray(state.tokens_BxN[:, row * w : (row + 1) * w])
