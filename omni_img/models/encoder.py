"""Multimodal bidirectional encoder: prompt text (+ source image VQ tokens + earlier turns).

Shape letters: B batch, Lt prompt length, Lh history length (in text tokens), h×w source
token grid (N = h*w), gt text tokens a position (``text_group``), g source block side
(``group``), S = Lh/gt + N/g² + Lt/gt encoder positions, D width.

The encoder reads one sequence made of up to three segments, in this order:

    [history (Lh)] [source image tokens (N)] [prompt text (Lt)]

- history: the instructions of earlier turns of a session, as text ids separated by SEP,
  oldest first (present when ``max_history_len > 0``);
- source: the VQ tokens of the image being edited, with learned 2-D positions (present
  when ``use_source``); masked out for examples without a source;
- text: the current prompt, BOS ... EOS.

Grouping keeps the sequence short: one position holds gt consecutive text tokens (bytes)
or one g×g block of source tokens, their embeddings (D/gt or D/g² wide) side by side, so
a position still knows every token it holds exactly (a word can be spelled from it).
gt = g = 1 is one token a position. The text tokenizer may lay a prompt out word-aligned
(``ByteTokenizer(word_slots=gt)``: PAD before each word so it starts a position); the
encoder reads the laid-out ids as they come.

Each segment gets a learned modality embedding and its own positions. Text and history
share the text embedding table. ``encoder_inputs`` assembles the (ids, modality, mask)
sequence token by token as plain arrays (the source block by block: g×g blocks in raster
order, each row-major; raster order for g = 1), so tests and tools can inspect exactly
what the encoder reads; the module groups it into positions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_img.models.ar_decoder import to_groups
from omni_img.models.transformer import ACT_BLD, Block, Positions2D, RMSNorm, embed_init

MOD_HISTORY, MOD_IMAGE, MOD_TEXT = 0, 1, 2


class EncoderInputs(NamedTuple):
    """The encoder's input sequence token by token: ``ids_BxS`` (text ids or image token
    ids by modality), ``modality_BxS`` (MOD_HISTORY/MOD_IMAGE/MOD_TEXT), ``mask_BxS``
    (True = real token), and ``segments``: name -> (start, length) of each present
    segment, in tokens."""

    ids_BxS: jax.Array
    modality_BxS: jax.Array
    mask_BxS: jax.Array
    segments: dict[str, tuple[int, int]]


def encoder_inputs(
    text_ids_BxLt: jax.Array,
    text_mask_BxLt: jax.Array,
    *,
    grid: tuple[int, int] | None,
    max_history_len: int,
    source_tokens_Bxhxw: jax.Array | None = None,
    has_source_B: jax.Array | None = None,
    history_ids_BxLh: jax.Array | None = None,
    history_mask_BxLh: jax.Array | None = None,
    group: int = 1,
) -> EncoderInputs:
    """Assemble [history][source][text]; absent optional parts become masked zeros.

    ``grid`` is the source token grid (h, w), or None when the encoder takes no source;
    ``group`` the side of the blocks the source is listed in.
    """
    b = text_ids_BxLt.shape[0]
    ids, mods, masks, segments, start = [], [], [], {}, 0

    def add(name, ids_BxL, mask_BxL, modality):
        nonlocal start
        length = ids_BxL.shape[1]
        ids.append(ids_BxL.astype(jnp.int32))
        masks.append(mask_BxL.astype(bool))
        mods.append(jnp.full((b, length), modality, jnp.int32))
        segments[name] = (start, length)
        start += length

    if max_history_len > 0:
        if history_ids_BxLh is None:
            history_ids_BxLh = jnp.zeros((b, max_history_len), jnp.int32)
            history_mask_BxLh = jnp.zeros((b, max_history_len), bool)
        if history_ids_BxLh.shape != (b, max_history_len):
            raise ValueError(
                f"history_ids shape {history_ids_BxLh.shape} != {(b, max_history_len)}"
            )
        add("history", history_ids_BxLh, history_mask_BxLh, MOD_HISTORY)
    if grid is not None:
        h, w = grid
        if source_tokens_Bxhxw is None:
            source_tokens_Bxhxw = jnp.zeros((b, h, w), jnp.int32)
            has_source_B = jnp.zeros((b,), bool)
        if source_tokens_Bxhxw.shape != (b, h, w):
            raise ValueError(f"source token grid shape {source_tokens_Bxhxw.shape} != {(b, h, w)}")
        if has_source_B is None:
            has_source_B = jnp.ones((b,), bool)
        blocks = to_groups(jnp.asarray(source_tokens_Bxhxw, jnp.int32), group).reshape(b, h * w)
        src_mask = jnp.broadcast_to(has_source_B.astype(bool)[:, None], (b, h * w))
        add("source", blocks, src_mask, MOD_IMAGE)
    add("text", text_ids_BxLt, text_mask_BxLt, MOD_TEXT)
    return EncoderInputs(
        jnp.concatenate(ids, 1), jnp.concatenate(mods, 1), jnp.concatenate(masks, 1), segments
    )


def grouped_length(length: int, group: int) -> int:
    """Positions a segment of `length` tokens takes, `group` tokens a position."""
    return -(-length // group)


class Encoder(nn.Module):
    """Bidirectional transformer over the assembled sequence -> (E_BxSxD, mask_BxS)."""

    text_vocab_size: int
    image_vocab_size: int
    max_text_len: int
    max_history_len: int
    grid: tuple[int, int] | None  # source token grid, None = no source segment
    dim: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    mlp_kind: str = "swiglu"
    group: int = 1  # side of the source token blocks one position holds
    text_group: int = 1  # text (and history) tokens one position holds
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text_ids_BxLt, text_mask_BxLt, **optional) -> tuple[jax.Array, jax.Array]:
        """``optional``: source_tokens_Bxhxw, has_source_B, history_ids_BxLh,
        history_mask_BxLh (see ``encoder_inputs``). Returns E_BxSxD (dtype) and mask_BxS."""
        if text_ids_BxLt.shape[1] > self.max_text_len:
            raise ValueError(f"text length {text_ids_BxLt.shape[1]} > {self.max_text_len}")
        inp = encoder_inputs(
            text_ids_BxLt,
            text_mask_BxLt,
            grid=self.grid,
            max_history_len=self.max_history_len,
            group=self.group,
            **optional,
        )
        pdt = self.param_dtype
        part = nn.with_logical_partitioning
        vocab_init, pos_init = (
            part(embed_init, ("vocab", "embed")),
            part(embed_init, (None, "embed")),
        )
        if self.dim % (self.group * self.group) or self.dim % self.text_group:
            raise ValueError(f"width {self.dim} does not split into the groups' slots")
        text_dim = self.dim // self.text_group
        text_table = self.param("text_embed", vocab_init, (self.text_vocab_size, text_dim), pdt)
        modality_table = self.param("modality", pos_init, (3, self.dim), pdt)

        def positions_1d(name, length):
            table = self.param(name, pos_init, (length, self.dim), pdt)
            return table[None, :length]

        parts, modalities, masks = [], [], []
        for name, (start, length) in inp.segments.items():
            ids_BxL = inp.ids_BxS[:, start : start + length]
            if name == "source":
                slots = self.group * self.group
                table = self.param(
                    "image_embed", vocab_init, (self.image_vocab_size, self.dim // slots), pdt
                )
                h, w = self.grid[0] // self.group, self.grid[1] // self.group
                rows, cols = jnp.arange(h * w) // w, jnp.arange(h * w) % w
                pos = Positions2D(h, w, self.dim, pdt, name="source_pos")(rows, cols)[None]
            else:
                slots = self.text_group
                table = text_table
                max_len = self.max_history_len if name == "history" else self.max_text_len
                pos = positions_1d(f"{name}_pos", grouped_length(max_len, slots))
            ids_BxPxG, mask_BxP = _group_tokens(
                ids_BxL, inp.mask_BxS[:, start : start + length], slots
            )
            x = _embed_groups(table, ids_BxPxG, self.dim)
            parts.append(x + pos[:, : x.shape[1]])
            # A segment has one modality throughout: its first token's, for every position.
            modalities.append(jnp.broadcast_to(inp.modality_BxS[:, start, None], mask_BxP.shape))
            masks.append(mask_BxP)
        modality_BxS = jnp.concatenate(modalities, 1)
        x_BxSxD = jnp.concatenate(parts, 1) + jnp.take(modality_table, modality_BxS, axis=0)
        x_BxSxD = nn.with_logical_constraint(x_BxSxD.astype(self.dtype), ACT_BLD)

        mask_BxS = jnp.concatenate(masks, 1)
        attn_mask = mask_BxS[:, None, None, :]
        block_cls = nn.remat(Block) if self.remat else Block
        for i in range(self.num_layers):
            x_BxSxD, _ = block_cls(
                num_heads=self.num_heads,
                head_dim=self.dim // self.num_heads,
                mlp_dim=self.mlp_dim,
                mlp_kind=self.mlp_kind,
                dim=self.dim,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layer_{i}",
            )(x_BxSxD, mask=attn_mask)
        e_BxSxD = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x_BxSxD)
        return nn.with_logical_constraint(e_BxSxD, ACT_BLD), mask_BxS


def _group_tokens(ids_BxL: jax.Array, mask_BxL: jax.Array, slots: int):
    """(B, L) -> ((B, P, slots) ids, (B, P) mask): padded to whole groups; a position is
    real if any token in it is."""
    b, length = ids_BxL.shape
    pad = grouped_length(length, slots) * slots - length
    if pad:
        ids_BxL = jnp.pad(ids_BxL, ((0, 0), (0, pad)))
        mask_BxL = jnp.pad(mask_BxL, ((0, 0), (0, pad)))
    ids_BxPxG = ids_BxL.reshape(b, -1, slots)
    return ids_BxPxG, mask_BxL.reshape(b, -1, slots).any(-1)


def _embed_groups(table_VxF: jax.Array, ids_BxPxG: jax.Array, dim: int) -> jax.Array:
    """The G embeddings of each position side by side: (B, P, G·F) = (B, P, D)."""
    x = jnp.take(table_VxF, ids_BxPxG, axis=0)
    return x.reshape(*ids_BxPxG.shape[:2], dim)
