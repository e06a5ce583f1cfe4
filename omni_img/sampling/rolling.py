"""Sampling the rolling decoder: `sequential` and `rolling` modes, and streaming.

Both modes give every band the same K Euler steps of the rectified flow, t = 1 → 0 on the
grid t = k/K, and draw the same initial noise per band (key = fold_in(rng, band)). They
differ in how bands overlap in time:

- `sequential`: band g is fully denoised in K calls, then band g + 1 starts.
- `rolling`: a window of W bands at staggered noise levels, D = K/W steps apart. Each
  global step is ONE model call that advances every band in the window one notch; every
  D steps the top band leaves the window clean and a new band enters at the bottom.

Sequential is rolling with W = 1, and the code is the same: a run is a list of *phases*
of D steps. Phase p denoises bands max(0, p−W+1) … min(p, N−1); at its first step it
also runs the band that has just become clean (band p − W) at t = 0, so its keys and
values enter the cache that all lower bands attend to. Number of sequential model calls:

    calls(N, K, W) = K + (N − 1)·K/W        (sequential: W = 1 → N·K)

e.g. N = 4, K = 8: sequential 32, rolling W = 2 → 20, W = 4 → 14, W = 8 → 11. With N = 1
both modes make the same K calls on the same inputs and agree exactly.

Phases with the same window size run as one `lax.scan` over phases (the steady state),
steps inside a phase as a `lax.scan` over steps; only the W − 1 warm-up and W − 1
cool-down phases, whose windows are smaller, are traced one by one. So a mode compiles
about 2·W step bodies, independent of N, and never runs a Python loop per step.

Streaming (`stream`) runs the same phases one jitted call at a time, pulling token rows
from an iterator only as far as the phase's lowest band needs (`cfg.rows_needed`), and
yields (band, image so far) as each band becomes clean. Because the denoiser attends only
to token rows < rows_needed(band) in training and sampling alike, rows not yet produced
are never seen, and a streamed image equals the non-streamed one for the same seed (up to
float rounding between differently fused XLA programs; the tests check 1e-5).

Shape letters: B batch, N bands, R band height, W image width (pixels), h×w token grid,
S text length, E text width, Y layers, C cached tokens, H heads, K head dim (in arrays).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omni_img.compilation import StoredJit
from omni_img.errors import UserError
from omni_img.models.bands import RollingDecoderConfig, bands_to_image
from omni_img.models.rolling_decoder import Memory, RollingDecoder
from omni_img.models.transformer import KVCache

MODES = ("sequential", "rolling")


@dataclasses.dataclass(frozen=True)
class Phase:
    """D consecutive global steps with a fixed window of bands lo … lo + size − 1."""

    index: int  # p
    lo: int
    size: int
    commit: bool  # at step 0, also run band lo − 1 clean and cache its keys/values
    steps: int  # D


def window_size(cfg: RollingDecoderConfig, mode: str) -> int:
    """W of a mode: 1 for sequential, cfg.window for rolling. Unknown mode → UserError."""
    if mode == "sequential":
        return 1
    if mode == "rolling":
        return cfg.window
    raise UserError(f"unknown decoder mode {mode!r}; choose one of {', '.join(MODES)}")


def phase_plan(cfg: RollingDecoderConfig, mode: str) -> tuple[Phase, ...]:
    """The static schedule of a mode: N + W − 1 phases of D = K/W steps each."""
    w = window_size(cfg, mode)
    n, k = cfg.num_bands, cfg.steps_per_band
    if k % w:
        raise UserError(f"rolling decoder: window={w} does not divide steps_per_band={k}")
    d = k // w
    plan = []
    for p in range(n + w - 1):
        lo, hi = max(0, p - w + 1), min(p, n - 1)
        plan.append(Phase(index=p, lo=lo, size=hi - lo + 1, commit=p - w >= 0, steps=d))
    return tuple(plan)


def num_model_calls(cfg: RollingDecoderConfig, mode: str) -> int:
    """Sequential model calls of a mode: K + (N − 1)·K/W (W = 1 for sequential)."""
    return sum(ph.steps for ph in phase_plan(cfg, mode))


def steps_per_band(cfg: RollingDecoderConfig, mode: str) -> int:
    """Denoising steps every band gets; K in both modes (checked by counting in tests)."""
    window_size(cfg, mode)
    return cfg.steps_per_band


# ----------------------------------------------------------------------------- state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplerState:
    """Everything a run carries between steps.

    bands: (B, N, R, W, 3) current pixels of every band (noise before a band starts);
    cache_k, cache_v: (Y, B, C, H, K) keys/values of the clean bands (valid above the
    current window); calls: () int32 model calls so far; steps: (N,) int32 denoising
    steps each band has had.
    """

    bands: jax.Array
    cache_k: jax.Array
    cache_v: jax.Array
    calls: jax.Array
    steps: jax.Array


def initial_state(cfg: RollingDecoderConfig, rng: jax.Array, batch: int) -> SamplerState:
    """Per-band initial noise from fold_in(rng, band), zero cache, zero counters."""
    shape = (batch, cfg.band_height, cfg.image_width, 3)
    noise = [
        jax.random.normal(jax.random.fold_in(rng, g), shape, jnp.float32)
        for g in range(cfg.num_bands)
    ]
    heads = cfg.num_heads
    cache_shape = (
        cfg.num_layers,
        batch,
        cfg.num_bands * cfg.patches_per_band,
        heads,
        cfg.dim // heads,
    )
    zeros = jnp.zeros(cache_shape, jnp.dtype(cfg.dtype))
    return SamplerState(
        bands=jnp.stack(noise, axis=1),
        cache_k=zeros,
        cache_v=zeros,
        calls=jnp.zeros((), jnp.int32),
        steps=jnp.zeros((cfg.num_bands,), jnp.int32),
    )


def _step(
    model: RollingDecoder,
    params: Any,
    cfg: RollingDecoderConfig,
    memory: Memory,
    state: SamplerState,
    p: jax.Array,
    lo: jax.Array,
    i: jax.Array,
    *,
    size: int,
    steps: int,
    commit: bool,
) -> SamplerState:
    """One global step: one model call, every band of the window one Euler notch lower."""
    k = cfg.steps_per_band
    b = state.bands.shape[0]
    x_win = jax.lax.dynamic_slice_in_dim(state.bands, lo, size, axis=1)
    # Band lo + j has had (p − lo − j)·D + i steps; integer numerator keeps t exact.
    done_n = (p - lo - jnp.arange(size)) * steps + i
    t_n = (k - done_n).astype(jnp.float32) / k
    t_in = jnp.broadcast_to(t_n[None], (b, size))
    ids = lo + jnp.arange(size, dtype=jnp.int32)
    x_in = x_win
    if commit:
        x_clean = jax.lax.dynamic_slice_in_dim(state.bands, lo - 1, 1, axis=1)
        x_in = jnp.concatenate([x_clean, x_win], axis=1)
        t_in = jnp.concatenate([jnp.zeros((b, 1), jnp.float32), t_in], axis=1)
        ids = jnp.concatenate([jnp.reshape(lo - 1, (1,)).astype(jnp.int32), ids])
    # Writes the call's keys/values into the cache slots of its bands: the clean band's
    # stay for good (later calls start below it), the noisy ones are rewritten each step.
    v, cache = model.apply(
        params, x_in, t_in, ids, memory, KVCache(k=state.cache_k, v=state.cache_v), method="denoise"
    )
    if commit:
        v = v[:, 1:]
    x_win = x_win - v / k  # Euler: Δt = −1/K
    bands = jax.lax.dynamic_update_slice_in_dim(state.bands, x_win, lo, axis=1)
    steps_n = jax.lax.dynamic_slice_in_dim(state.steps, lo, size) + 1
    return SamplerState(
        bands=bands,
        cache_k=cache.k,
        cache_v=cache.v,
        calls=state.calls + 1,
        steps=jax.lax.dynamic_update_slice_in_dim(state.steps, steps_n, lo, 0),
    )


def run_phase(model, params, cfg, memory, state, p, lo, *, size: int, steps: int, commit: bool):
    """All D steps of one phase: step 0 (with the commit, if any), then a scan."""
    step = functools.partial(_step, model, params, cfg, memory, size=size, steps=steps)
    first = 0
    if commit:
        state = step(state, p, lo, jnp.int32(0), commit=True)
        first = 1
    if steps > first:
        body = lambda s, i: (step(s, p, lo, i, commit=False), None)
        state, _ = jax.lax.scan(body, state, jnp.arange(first, steps, dtype=jnp.int32))
    return state


def _groups(plan: tuple[Phase, ...]) -> list[list[Phase]]:
    """Consecutive phases with the same window size and commit flag (one scan each)."""
    groups: list[list[Phase]] = []
    for ph in plan:
        if groups and (groups[-1][0].size, groups[-1][0].commit) == (ph.size, ph.commit):
            groups[-1].append(ph)
        else:
            groups.append([ph])
    return groups


def sample_fn(params, tokens_Bxhxw, text_BxSxE, text_mask_BxS, rng, *, cfg, mode):
    model = RollingDecoder(cfg)
    memory = model.apply(params, tokens_Bxhxw, text_BxSxE, text_mask_BxS, method="encode_memory")
    state = initial_state(cfg, rng, tokens_Bxhxw.shape[0])
    for group in _groups(phase_plan(cfg, mode)):
        head = group[0]
        run = functools.partial(
            run_phase,
            model,
            params,
            cfg,
            memory,
            size=head.size,
            steps=head.steps,
            commit=head.commit,
        )
        if len(group) == 1:
            state = run(state, jnp.int32(head.index), jnp.int32(head.lo))
        else:
            ps = jnp.array([ph.index for ph in group], jnp.int32)
            los = jnp.array([ph.lo for ph in group], jnp.int32)
            state, _ = jax.lax.scan(lambda s, x, run=run: (run(s, *x), None), state, (ps, los))
    image = jnp.clip(bands_to_image(state.bands), -1.0, 1.0)
    return image, {"model_calls": state.calls, "steps_per_band": state.steps}


@functools.lru_cache(maxsize=32)
def make_sampler(cfg: RollingDecoderConfig, mode: str):
    """Jitted fn(params, tokens, text_emb, text_mask, rng) -> (image, stats) of one mode."""
    phase_plan(cfg, mode)  # validates the mode and window before anything compiles
    jitted = jax.jit(functools.partial(sample_fn, cfg=cfg, mode=mode))
    return StoredJit(jitted, f"rolling_{mode}", static_repr=repr((cfg, mode)))


def sample(
    params: Any,
    cfg: RollingDecoderConfig,
    tokens_Bxhxw: jax.Array,
    text_emb_BxSxE: jax.Array,
    text_mask_BxS: jax.Array,
    rng: jax.Array,
    mode: str = "rolling",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Decodes a token grid into an image.

    tokens: (B, h, w) int32; text_emb: (B, S, E); text_mask: (B, S) bool; rng: a key.
    Returns image (B, H, W, 3) float32 in [−1, 1] and stats {model_calls: () int32,
    steps_per_band: (N,) int32}, counted while running. Deterministic for a given rng.
    """
    _check_inputs(cfg, tokens_Bxhxw.shape, text_emb_BxSxE.shape)
    return make_sampler(cfg, mode)(params, tokens_Bxhxw, text_emb_BxSxE, text_mask_BxS, rng)


def _check_inputs(cfg: RollingDecoderConfig, tokens_shape, text_shape) -> None:
    if tuple(tokens_shape[1:]) != (cfg.token_rows, cfg.token_cols):
        raise UserError(
            f"rolling decoder: token grid {tuple(tokens_shape[1:])} does not match "
            f"the config's {(cfg.token_rows, cfg.token_cols)}"
        )
    if text_shape[-1] != cfg.text_dim:
        raise UserError(
            f"rolling decoder: text embeddings have width {text_shape[-1]}, "
            f"the config says text_dim={cfg.text_dim}"
        )


# ----------------------------------------------------------------------------- streaming


@functools.lru_cache(maxsize=32)
def _jitted_memory(cfg: RollingDecoderConfig):
    model = RollingDecoder(cfg)
    return jax.jit(lambda params, t, e, m: model.apply(params, t, e, m, method="encode_memory"))


@functools.lru_cache(maxsize=128)
def _jitted_phase(cfg: RollingDecoderConfig, size: int, steps: int, commit: bool):
    model = RollingDecoder(cfg)

    def run(params, memory, state, p, lo):
        return run_phase(
            model, params, cfg, memory, state, p, lo, size=size, steps=steps, commit=commit
        )

    return jax.jit(run, donate_argnums=(2,))


def _next_row(rows: Iterator[Any], index: int, batch: int, cfg: RollingDecoderConfig):
    """Row `index` of the token source as a (B, w) int32 array; UserError if it ran out."""
    item = next(rows, None)
    if item is None:
        raise UserError(
            f"rolling decoder: the token source ended after {index} of {cfg.token_rows} rows"
        )
    if isinstance(item, tuple):
        got, item = item
        if got != index:
            raise UserError(f"rolling decoder: token row {got} arrived where {index} was due")
    row = np.asarray(item, np.int32)
    if row.shape not in ((cfg.token_cols,), (batch, cfg.token_cols)):
        raise UserError(
            f"rolling decoder: token row of shape {row.shape}, expected ({batch}, {cfg.token_cols})"
        )
    return np.broadcast_to(row, (batch, cfg.token_cols))


@functools.lru_cache(maxsize=8)
def _jitted_init(cfg: RollingDecoderConfig, batch: int):
    return jax.jit(lambda rng: initial_state(cfg, rng, batch))


def stream(
    params: Any,
    cfg: RollingDecoderConfig,
    token_rows: Iterable[Any],
    text_emb_BxSxE: jax.Array,
    text_mask_BxS: jax.Array,
    rng: jax.Array,
    mode: str = "sequential",
) -> Iterator[tuple[int, np.ndarray]]:
    """Decodes while the tokens are still being produced; yields bands as they finish.

    token_rows: an iterable of finished token rows, top to bottom, each (B, w) or (w,)
    int, or (row_index, row) pairs as `omni_img.sampling.ar.stream_rows` yields them. A row
    is pulled only when a phase's lowest band needs it (rows < cfg.rows_needed(band)); rows
    not yet pulled are zeros and never attended. Yields (g, image_so_far) for g = 0 … N − 1
    as band g becomes clean: image_so_far (B, H, W, 3) float32 numpy in [−1, 1], bands
    below g zero. Same seed → same image as `sample` with the same mode.

    The default mode is sequential: its first band is ready after K of N·K calls, while a
    rolling window holds band 0 back until the window has filled ((W+1)/(2N) of the
    work for W ≤ N).
    """
    plan = phase_plan(cfg, mode)
    w_size = window_size(cfg, mode)
    batch = text_emb_BxSxE.shape[0]
    _check_inputs(cfg, (batch, cfg.token_rows, cfg.token_cols), text_emb_BxSxE.shape)
    tokens = np.zeros((batch, cfg.token_rows, cfg.token_cols), np.int32)
    have = 0
    rows = iter(token_rows)
    memory = None
    state = _jitted_init(cfg, batch)(rng)
    for ph in plan:
        need = cfg.rows_needed(ph.lo + ph.size - 1)
        if need > have:
            while have < need:
                tokens[:, have] = _next_row(rows, have, batch, cfg)
                have += 1
            memory = _jitted_memory(cfg)(params, jnp.asarray(tokens), text_emb_BxSxE, text_mask_BxS)
        run = _jitted_phase(cfg, ph.size, ph.steps, ph.commit)
        state = run(params, memory, state, jnp.int32(ph.index), jnp.int32(ph.lo))
        g = ph.index - w_size + 1
        if g >= 0:
            bands = np.array(state.bands[:, : g + 1])  # blocks until band g is done
            image = np.zeros((batch, cfg.image_height, cfg.image_width, 3), np.float32)
            image[:, : (g + 1) * cfg.band_height] = np.clip(
                bands.reshape(batch, -1, cfg.image_width, 3), -1.0, 1.0
            )
            yield g, image
