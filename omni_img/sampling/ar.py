"""Autoregressive sampling of visual tokens: KV-cached jitted loop, CFG, top-k / top-p.

Shape letters: B batch (prompts), C = 2B with classifier-free guidance (conditional rows
then unconditional rows) else B, N = h*w tokens, P decoder positions (N with one token
a position; N/4 with 2×2 blocks, see ``GeneratorConfig.group``), G tokens a position,
S encoder length, V image vocabulary.

- ``sample(model, params, cond, rng, scfg)``: one jitted call; the prompt side is encoded
  and projected to cross-attention keys/values once, then a ``lax.fori_loop`` writes one
  token per step into a fixed-size self-attention KV cache (no Python loop per token).
- ``sample(..., cached=False)``: the reference: every step recomputes the decoder over
  the whole (padded, causally masked) prefix. Same per-step randomness, so it must agree
  with the cached sampler token for token; used by tests and the benchmark.
- ``stream_rows(...)``: yields each finished token row; a jitted loop over one row of
  positions (g token rows) is called from Python with the cache carried between calls.

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

from omni_img.compilation import StoredJit
from omni_img.models.ar_decoder import from_groups
from omni_img.models.generator import (
    Generator,
    condition_batch_size,
    decoder_inputs,
    init_caches,
    start_tokens,
    step_inputs,
    unconditional,
)
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


def _choose(model: Generator, params, h_CxD, rng, t, scfg):
    """The G tokens of position t for each of the B prompts: (B, G) int32, from the
    decoder's states at t (conditional rows, then unconditional ones with CFG).

    The independent head gives all G slots' logits in one call and they are drawn
    together; the sequential head is called once a slot, each call seeing the slots
    drawn before it (slot k's draw uses ``fold_in(key, k)``)."""
    key = jax.random.fold_in(rng, t)
    c, slots = h_CxD.shape[0], model.cfg.group**2

    def logits(block_BxG):
        block_Cx1xG = _double(block_BxG, scfg)[:, None]
        out_Cx1xGxV = model.apply(
            {"params": params}, h_CxD[:, None], block_Cx1xG, method=Generator.block_logits
        )
        return guide_logits(out_Cx1xGxV[:, 0], scfg)  # (B, G, V)

    b = c // 2 if scfg.guided else c
    block_BxG = jnp.zeros((b, slots), jnp.int32)
    if model.cfg.block_head != "sequential" or slots == 1:
        guided_BxGxV = logits(block_BxG)
        v = guided_BxGxV.shape[-1]
        return pick_tokens(guided_BxGxV.reshape(b * slots, v), key, scfg).reshape(b, slots)
    for k in range(slots):
        slot_BxV = logits(block_BxG)[:, k]
        block_BxG = block_BxG.at[:, k].set(pick_tokens(slot_BxV, jax.random.fold_in(key, k), scfg))
    return block_BxG


def _double(x_B, scfg):
    return jnp.concatenate([x_B, x_B], axis=0) if scfg.guided else x_B


def _first_inputs(cfg, cond, scfg: SamplingConfig) -> jax.Array:
    """The decoder's first input per row (C,): with CFG the unconditional rows' own
    start tokens follow the conditional ones (they differ for a class-conditional model)."""
    cond = {k: jnp.asarray(v) for k, v in cond.items()}
    if not scfg.guided:
        return start_tokens(cfg, cond)
    uncond = unconditional(cond, cfg.null_class)
    return jnp.concatenate([start_tokens(cfg, cond), start_tokens(cfg, uncond)])


# --------------------------------------------------------------------------- decoding


class DecodeState(NamedTuple):
    """Everything the cached loop carries; a pytree, so it passes between jitted calls."""

    caches: tuple[KVCache, ...]  # self-attention, (C, P, H, K) per layer
    memory_kvs: tuple[KVCache, ...]  # cross-attention keys/values of E, (C, S, H, K)
    e_mask_CxS: jax.Array
    groups_BxPxG: jax.Array  # int32; positions not yet written hold 0
    prev_CxG: jax.Array  # int32: the last position written per row (start tokens before it)
    rng: jax.Array


def _encode(model: Generator, params, cond, scfg):
    cond = {k: jnp.asarray(v) for k, v in cond.items() if k != "target_tokens"}
    if scfg.guided:
        uncond = unconditional(cond, model.cfg.null_class)
        cond = {k: jnp.concatenate([cond[k], uncond[k]], axis=0) for k in cond}
    return model.apply({"params": params}, cond, method=Generator.encode)


def decode_start(params, cond, rng, *, model: Generator, scfg: SamplingConfig) -> DecodeState:
    cfg = model.cfg
    e_CxSxD, e_mask_CxS = _encode(model, params, cond, scfg)
    memory_kvs = model.apply({"params": params}, e_CxSxD, method=Generator.memory_kv)
    b = condition_batch_size(cond)
    start_CxG = _start_groups(cfg, cond, scfg)
    return DecodeState(
        caches=init_caches(cfg, start_CxG.shape[0]),
        memory_kvs=memory_kvs,
        e_mask_CxS=e_mask_CxS,
        groups_BxPxG=jnp.zeros((b, cfg.num_positions, cfg.group**2), jnp.int32),
        prev_CxG=start_CxG,
        rng=rng,
    )


def _start_groups(cfg, cond, scfg) -> jax.Array:
    """(C, G): every slot of the first input position holds the row's start token."""
    return jnp.repeat(_first_inputs(cfg, cond, scfg)[:, None], cfg.group**2, axis=1)


def groups_to_grid(cfg, groups_BxPxG) -> jax.Array:
    return from_groups(groups_BxPxG, cfg.grid_h, cfg.grid_w, cfg.group)


def decode_advance(params, state: DecodeState, start, *, model, scfg, count: int) -> DecodeState:
    """Write positions [start, start + count) with the KV cache."""

    def body(i, s: DecodeState) -> DecodeState:
        t = start + i
        inputs_CxG = step_inputs(model.cfg, s.prev_CxG, s.groups_BxPxG, t)
        h_Cx1xD, caches = model.apply(
            {"params": params},
            inputs_CxG[:, None],
            t,
            s.memory_kvs,
            s.e_mask_CxS,
            s.caches,
            method=Generator.step,
        )
        tok_BxG = _choose(model, params, h_Cx1xD[:, 0], s.rng, t, scfg)
        groups = jax.lax.dynamic_update_slice_in_dim(s.groups_BxPxG, tok_BxG[:, None], t, 1)
        return s._replace(caches=caches, groups_BxPxG=groups, prev_CxG=_double(tok_BxG, scfg))

    return jax.lax.fori_loop(0, count, body, state)


def sample_cached_fn(params, cond, rng, *, model: Generator, scfg: SamplingConfig):
    state = decode_start(params, cond, rng, model=model, scfg=scfg)
    state = decode_advance(params, state, 0, model=model, scfg=scfg, count=model.cfg.num_positions)
    return groups_to_grid(model.cfg, state.groups_BxPxG)


# The serving path's entry point: its executable may persist across processes.
_sample_cached = StoredJit(
    jax.jit(sample_cached_fn, static_argnames=("model", "scfg")), "ar_sample"
)


@functools.partial(jax.jit, static_argnames=("model", "scfg"))
def _sample_uncached(params, cond, rng, *, model: Generator, scfg: SamplingConfig):
    cfg = model.cfg
    e_CxSxD, e_mask_CxS = _encode(model, params, cond, scfg)
    b = condition_batch_size(cond)
    first_C = _first_inputs(cfg, cond, scfg)
    slots = cfg.group**2

    def body(t, groups_BxPxG):
        inputs_CxPxG = decoder_inputs(cfg, _double(groups_BxPxG, scfg), first_C)
        h_CxPxD = model.apply(
            {"params": params}, inputs_CxPxG, e_CxSxD, e_mask_CxS, method=Generator.features
        )
        h_CxD = jax.lax.dynamic_index_in_dim(h_CxPxD, t, axis=1, keepdims=False)
        tok_BxG = _choose(model, params, h_CxD, rng, t, scfg)
        return jax.lax.dynamic_update_slice_in_dim(groups_BxPxG, tok_BxG[:, None], t, 1)

    empty = jnp.zeros((b, cfg.num_positions, slots), jnp.int32)
    return groups_to_grid(cfg, jax.lax.fori_loop(0, cfg.num_positions, body, empty))


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
    return fn(params, dict(cond), rng, model=model, scfg=scfg)


_start_jit = jax.jit(decode_start, static_argnames=("model", "scfg"))
_advance_jit = jax.jit(decode_advance, static_argnames=("model", "scfg", "count"), donate_argnums=1)


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
    cfg = model.cfg
    rows, cols = cfg.position_grid
    state = _start_jit(params, dict(cond), rng, model=model, scfg=scfg)
    for position_row in range(rows):
        start = jnp.asarray(position_row * cols, jnp.int32)
        state = _advance_jit(params, state, start, model=model, scfg=scfg, count=cols)
        # Positions not yet written are zeros; the g token rows just finished are exact.
        grid_Bxhxw = np.asarray(groups_to_grid(cfg, state.groups_BxPxG))
        for row in range(position_row * cfg.group, (position_row + 1) * cfg.group):
            yield row, grid_Bxhxw[:, row]
