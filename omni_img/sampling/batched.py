"""Several independent requests sampled as one batch, each exactly as it would be alone.

A batch here is not one conditioning dict of B rows (``ar.sample`` with B rows draws one
random stream for all of them, so a row's image would depend on its neighbours). It is
a ``jax.vmap`` of the batch-of-one samplers over (conditioning, key) pairs: request i
draws the random numbers its own seed gives, whatever else shares the batch.

Exactness: a vmapped program is still a different XLA program from the batch-of-one
one, and may round floats differently. ``pad_to`` fixes that: every batch is padded
(with copies of its first request) to one size, so a request runs the same program
alone and with company, and its rows never mix with the others'. The server pads to
its maximum batch; the tests check that a request's pixels are then identical alone and
batched.

Shape letters: N requests, 1 the batch-of-one axis every sampler sees, h×w token grid,
H×W image.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from omni_img.models.bands import RollingDecoderConfig
from omni_img.models.generator import Generator
from omni_img.models.rolling_decoder import RollingDecoder
from omni_img.sampling import ar
from omni_img.sampling import rolling as rolling_sampling
from omni_img.sampling.ar import SamplingConfig


def stack_conditionings(conds: Sequence[dict[str, np.ndarray]], pad_to: int = 0):
    """Batch-of-one conditioning dicts -> one dict of (N, 1, ...) arrays, padded with the
    first request's rows up to ``pad_to``. Every dict must have the same keys."""
    keys = set(conds[0])
    if any(set(c) != keys for c in conds):
        raise ValueError("conditionings of one batch must have the same fields")
    padded = list(conds) + [conds[0]] * max(0, pad_to - len(conds))
    return {k: np.stack([np.asarray(c[k]) for c in padded]) for k in sorted(keys)}


def seed_keys(seeds: Sequence[int], pad_to: int = 0) -> tuple[jax.Array, jax.Array]:
    """(AR keys, decoder keys), each (N, 2): what ``pipeline.split_seed`` gives each seed."""
    from omni_img.sampling.pipeline import split_seed

    padded = list(seeds) + [seeds[0]] * max(0, pad_to - len(seeds))
    pairs = [split_seed(s) for s in padded]
    return jnp.stack([a for a, _ in pairs]), jnp.stack([d for _, d in pairs])


# ----------------------------------------------------------------------------- jitted


@functools.partial(jax.jit, static_argnames=("model", "scfg"))
def _ar_many(params, conds, keys, *, model: Generator, scfg: SamplingConfig):
    one = lambda c, k: ar.sample_cached_fn(params, c, k, model=model, scfg=scfg)  # noqa: E731
    return jax.vmap(one)(conds, keys)  # (N, 1, h, w)


@functools.partial(jax.jit, static_argnames=("model",))
def _embed_many(params, conds, *, model: Generator):
    one = lambda c: model.apply({"params": params}, c, method="encode")  # noqa: E731
    return jax.vmap(one)(conds)


@functools.partial(jax.jit, static_argnames=("cfg", "mode"))
def _rolling_many(params, tokens, e, mask, keys, *, cfg: RollingDecoderConfig, mode: str):
    def one(t, ee, m, k):
        return rolling_sampling.sample_fn(params, t, ee, m, k, cfg=cfg, mode=mode)[0]

    return jax.vmap(one)(tokens, e, mask, keys)


@functools.partial(jax.jit, static_argnames=("model",))
def _conv_many(params, tokens, *, model):
    one = lambda t: model.apply({"params": params}, t, method="decode")  # noqa: E731
    return jnp.clip(jax.vmap(one)(tokens), -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("model", "scfg"))
def _ar_start_many(params, conds, keys, *, model, scfg):
    return jax.vmap(lambda c, k: ar.decode_start(params, c, k, model=model, scfg=scfg))(conds, keys)


@functools.partial(jax.jit, static_argnames=("model", "scfg", "count"), donate_argnums=1)
def _ar_advance_many(params, states, start, *, model, scfg, count: int):
    def one(s):
        return ar.decode_advance(params, s, start, model=model, scfg=scfg, count=count)

    return jax.vmap(one)(states)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _memory_many(params, tokens, e, mask, *, cfg: RollingDecoderConfig):
    model = RollingDecoder(cfg)
    one = lambda t, ee, m: model.apply(params, t, ee, m, method="encode_memory")  # noqa: E731
    return jax.vmap(one)(tokens, e, mask)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _init_many(keys, *, cfg: RollingDecoderConfig):
    return jax.vmap(lambda k: rolling_sampling.initial_state(cfg, k, 1))(keys)


@functools.partial(
    jax.jit, static_argnames=("cfg", "size", "steps", "commit"), donate_argnums=(2,)
)
def _phase_many(params, memories, states, p, lo, *, cfg, size, steps, commit):
    model = RollingDecoder(cfg)

    def one(memory, state):
        return rolling_sampling.run_phase(
            model, params, cfg, memory, state, p, lo, size=size, steps=steps, commit=commit
        )

    return jax.vmap(one)(memories, states)


def _to_uint8(images_Nx1xHxWx3) -> np.ndarray:
    from omni_img.models.tokenizer import to_uint8

    return to_uint8(images_Nx1xHxWx3)[:, 0]


# ----------------------------------------------------------------------------- entry points


def generate_many(pipeline, conds, seeds, sampling: SamplingConfig, decoder: str,
                  pad_to: int = 0):  # fmt: skip
    """Images uint8 (N, H, W, 3) and token grids (N, h, w) for N conditioning dicts and
    seeds, sampled together (see the module docstring for ``pad_to``)."""
    n = len(conds)
    stacked = stack_conditionings(conds, pad_to)
    cond = {k: jnp.asarray(v) for k, v in stacked.items()}
    ar_keys, decoder_keys = seed_keys(seeds, pad_to)
    tokens = _ar_many(pipeline.generator_params, cond, ar_keys, model=pipeline.generator,
                      scfg=sampling)  # fmt: skip
    if decoder == "conv":
        images = _conv_many(pipeline.tokenizer_params, tokens, model=pipeline.tokenizer)
    else:
        e, mask = _embed_many(pipeline.generator_params, cond, model=pipeline.generator)
        images = _rolling_many(pipeline.rolling_params, tokens, e, mask, decoder_keys,
                               cfg=pipeline.rolling_cfg, mode=decoder)  # fmt: skip
    return _to_uint8(images)[:n], np.asarray(tokens)[:n, 0]


Streamed = tuple[int, np.ndarray | None, np.ndarray | None]


def stream_many(pipeline, conds, seeds, sampling: SamplingConfig, decoder: str,
                pad_to: int = 0) -> Iterator[Streamed]:  # fmt: skip
    """``Pipeline.stream`` for N requests at once: yields (band g, images uint8
    (N, H, W, 3) so far, None) as each band becomes clean, then (-1, None, token grids
    (N, h, w)). Token rows are sampled only as the bands need them."""
    n, cfg, gen = len(conds), pipeline.rolling_cfg, pipeline.generator
    stacked = stack_conditionings(conds, pad_to)
    cond = {k: jnp.asarray(v) for k, v in stacked.items()}
    ar_keys, decoder_keys = seed_keys(seeds, pad_to)
    batch = ar_keys.shape[0]
    state = _ar_start_many(pipeline.generator_params, cond, ar_keys, model=gen, scfg=sampling)
    cols = gen.cfg.position_grid[1]
    tokens = np.zeros((batch, 1, *pipeline.grid), np.int32)  # rows the decoder may see
    produced = np.zeros_like(tokens)  # rows the AR sampler has written
    e, mask = _embed_many(pipeline.generator_params, cond, model=gen)
    plan = rolling_sampling.phase_plan(cfg, decoder)
    window = rolling_sampling.window_size(cfg, decoder)
    decoded = _init_many(decoder_keys, cfg=cfg)
    made, have, memory = 0, 0, None
    for ph in plan:
        need = cfg.rows_needed(ph.lo + ph.size - 1)
        if need > have:
            while made < need:  # one row of positions: cfg.group token rows
                start = jnp.asarray((made // gen.cfg.group) * cols, jnp.int32)
                state = _ar_advance_many(pipeline.generator_params, state, start, model=gen,
                                         scfg=sampling, count=cols)  # fmt: skip
                produced = np.asarray(_grid_many(state.groups_BxPxG, cfg=gen.cfg))
                made += gen.cfg.group
            # As in rolling.stream: rows past the need stay zero (never attended anyway).
            tokens[:, :, have:need] = produced[:, :, have:need]
            have = need
            memory = _memory_many(pipeline.rolling_params, jnp.asarray(tokens), e, mask, cfg=cfg)
        decoded = _phase_many(pipeline.rolling_params, memory, decoded, jnp.int32(ph.index),
                              jnp.int32(ph.lo), cfg=cfg, size=ph.size, steps=ph.steps,
                              commit=ph.commit)  # fmt: skip
        g = ph.index - window + 1
        if g >= 0:
            yield g, _band_images(cfg, decoded.bands, g)[:n], None
    while made < pipeline.grid[0]:  # rows no band needed (none for a consistent bundle)
        start = jnp.asarray((made // gen.cfg.group) * cols, jnp.int32)
        state = _ar_advance_many(pipeline.generator_params, state, start, model=gen,
                                 scfg=sampling, count=cols)  # fmt: skip
        produced = np.asarray(_grid_many(state.groups_BxPxG, cfg=gen.cfg))
        made += gen.cfg.group
    yield -1, None, produced[:n, 0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _grid_many(groups_NxBxPxG, *, cfg):
    return jax.vmap(functools.partial(ar.groups_to_grid, cfg))(groups_NxBxPxG)


def _band_images(cfg: RollingDecoderConfig, bands_Nx1xGxRxWx3, g: int) -> np.ndarray:
    """uint8 (N, H, W, 3): bands 0..g as decoded so far, the rest mid-grey (the 0 level)."""
    from omni_img.models.tokenizer import to_uint8

    bands = np.array(bands_Nx1xGxRxWx3[:, 0, : g + 1])
    n = bands.shape[0]
    image = np.zeros((n, cfg.image_height, cfg.image_width, 3), np.float32)
    image[:, : (g + 1) * cfg.band_height] = np.clip(
        bands.reshape(n, -1, cfg.image_width, 3), -1.0, 1.0
    )
    return to_uint8(image)
