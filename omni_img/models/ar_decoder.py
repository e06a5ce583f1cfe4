"""Autoregressive decoder over visual tokens in raster order, cross-attending to E.

Shape letters: B batch, h×w token grid, g group side, G = g*g tokens per position,
P = (h/g)*(w/g) positions, L positions fed in one call (P when training, 1 per decode
step), S encoder length, D width, V image vocabulary.

Grouped positions: with g = 2 each decoder position covers a 2×2 block of tokens, so a
16×16 token grid is written in 64 steps at the cost of an 8×8 one. Its input is the
previous block: the G tokens' embeddings (D/G wide each) side by side. The block's G
tokens come from one of two heads (``block_head``):
- ``"independent"``: one V-way head per slot, the G tokens independent given the
  position's state (one head call a position when sampling);
- ``"sequential"``: slot k also sees the tokens of slots < k (a small residual MLP over
  the state plus their embeddings), so a sampled block is drawn from a joint
  distribution, not from G marginals; G small head calls a position when sampling;
- ``"shared"``: independent as the first, but every slot reads the same V-way head off
  the state plus its slot's vector through a small residual MLP: what a code looks
  like is learnt once for all G slots, not G times (one head call a position).
g = 1 is the plain one-token-per-position decoder (both heads are then the same model).

Input at position i is the token at i-1 (a BOS id at i = 0) plus the learned 2-D
position of cell i -- the cell being predicted -- so the model always knows which row
and column it writes. With ``above_input`` the input also holds the block above cell i
(position i - w, written a row earlier; the mask id in the first row), embedded through
a table of its own and added: the two neighbours an outline continues from, one in the
input and not only through attention. Training may hide some inputs behind ``mask_id`` (see
``generator_loss``'s ``input_masking``), an id of its own past the start tokens.
Self-attention is causal with 1-D RoPE over the raster index (optional); every block
cross-attends to E with E's padding mask. Ids past the image vocabulary are start
tokens: ``image_vocab_size`` is the BOS of a text-conditioned model; a
class-conditional one (``cross_attention=False``) starts each sequence with its
class's own id instead, as LlamaGen does, and has no cross-attention at all.

Entry points (``nn.Module`` methods, call with ``model.apply(..., method=...)``):
- ``__call__(groups_in_BxPxG, e_BxSxD, e_mask_BxS, targets_BxPxG) -> logits_BxPxGxV``
  (float32): training (teacher forcing; the sequential head reads ``targets``);
- ``features(groups_in_BxPxG, e_BxSxD, e_mask_BxS) -> h_BxPxD``: the trunk alone;
- ``block_logits(h_BxLxD, block_BxLxG) -> logits_BxLxGxV``: the head; slot k's logits
  depend on ``block[..., :k]`` only (the independent head ignores ``block``);
- ``memory_kv(e_BxSxD) -> tuple[KVCache, ...]``: cross-attention keys/values per layer,
  computed once per prompt;
- ``step(groups_in_BxLxG, index, memory_kvs, e_mask_BxS, caches) -> (h_BxLxD, caches)``:
  incremental decoding at positions [index, index + L) with fixed-size self-attention
  caches from ``init_caches`` (index may be traced: usable in ``lax`` loops).
``to_groups`` / ``from_groups`` convert between the (B, h, w) grid and (B, P, G) positions.
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
    Mlp,
    Positions2D,
    RMSNorm,
    default_kernel_init,
    dense,
    embed_init,
    init_kv_cache,
)

BLOCK_HEADS = ("independent", "sequential", "shared")


def shift_right(target_BxPxG: jax.Array, bos) -> jax.Array:
    """Teacher-forcing inputs [start, t_0, ..., t_{P-2}] over positions: (B, P, G) int.

    ``bos``: an id, or one per row (B,); the start position holds it in every slot."""
    b, _, slots = target_BxPxG.shape
    bos_B = jnp.broadcast_to(jnp.asarray(bos, target_BxPxG.dtype), (b,))
    start_Bx1xG = jnp.broadcast_to(bos_B[:, None, None], (b, 1, slots))
    return jnp.concatenate([start_Bx1xG, target_BxPxG[:, :-1]], axis=1)


def to_groups(tokens_Bxhxw: jax.Array, g: int) -> jax.Array:
    """(B, h, w) token grid -> (B, P, G): g×g blocks in raster order, slots row-major."""
    b, h, w = tokens_Bxhxw.shape
    x = tokens_Bxhxw.reshape(b, h // g, g, w // g, g).transpose(0, 1, 3, 2, 4)
    return x.reshape(b, (h // g) * (w // g), g * g)


def from_groups(groups_BxPxG_: jax.Array, h: int, w: int, g: int) -> jax.Array:
    """Inverse of `to_groups` over the leading 3 axes: (B, P, G, ...) -> (B, h, w, ...)."""
    b, rest = groups_BxPxG_.shape[0], groups_BxPxG_.shape[3:]
    x = groups_BxPxG_.reshape(b, h // g, w // g, g, g, *rest)
    x = x.transpose(0, 1, 3, 2, 4, *range(5, 5 + len(rest)))
    return x.reshape(b, h, w, *rest)


class GroupEmbed(nn.Module):
    """Embeds (..., G) ids into (..., D): the G slots' embeddings, D/G wide each, side by
    side (G = 1: a plain D-wide embedding, stored as `embedding` like ``nn.Embed``)."""

    num_embeddings: int
    features: int
    slots: int = 1
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids_xG: jax.Array) -> jax.Array:
        if self.features % self.slots:
            raise ValueError(f"width {self.features} does not split into {self.slots} slots")
        table = self.param(
            "embedding",
            nn.with_logical_partitioning(embed_init, ("vocab", "embed")),
            (self.num_embeddings, self.features // self.slots),
            self.param_dtype,
        )
        x = jnp.take(table, ids_xG, axis=0)  # (..., G, D/G)
        return x.reshape(*ids_xG.shape[:-1], self.features)


class SequentialBlockHead(nn.Module):
    """Logits of a block's G slots, slot k conditioned on the block's tokens before it.

    Slot k's input is the position's state + a learned slot vector + the sum of the
    embeddings of the tokens in slots < k (one table per slot, so the sum still says
    which slot held which token); a residual MLP mixes them and a per-slot V-way head
    reads the result. In training the block is the target (teacher forcing, all slots
    in one call); in sampling it holds the slots drawn so far.
    """

    vocab_size: int  # V: logits per slot
    embed_rows: int  # rows of the token tables (V rounded up, as the input embedding)
    slots: int
    mlp_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array, block_BxLxG: jax.Array) -> jax.Array:
        d, g = h_BxLxD.shape[-1], self.slots
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        tables_GxRxD = self.param(
            "token_embedding",
            nn.with_logical_partitioning(embed_init, (None, "vocab", "embed")),
            (g, self.embed_rows, d),
            self.param_dtype,
        )
        slot_GxD = self.param(
            "slot_embedding",
            nn.with_logical_partitioning(embed_init, (None, "embed")),
            (g, d),
            self.param_dtype,
        )
        # Slot j's token looked up in table j: (B, L, G, D); a prefix sum over the slots
        # shifted by one gives slot k the sum of slots < k (exactly: slot k's own token
        # never enters it, not even as a rounding error).
        rows_BxLxG = block_BxLxG + jnp.arange(g) * self.embed_rows
        seen_BxLxGxD = jnp.take(tables_GxRxD.reshape(g * self.embed_rows, d), rows_BxLxG, axis=0)
        shifted = jnp.pad(seen_BxLxGxD[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))
        before_BxLxGxD = jnp.cumsum(shifted, axis=2)
        u = (h_BxLxD[:, :, None] + slot_GxD + before_BxLxGxD).astype(self.dtype)
        b, l_len = u.shape[:2]
        x = u.reshape(b, l_len * g, d)  # the MLP sees (B, L*G, D) as any sequence
        x = x + Mlp(self.mlp_dim, "gelu", name="mlp", **kw)(RMSNorm(name="mlp_norm", **kw)(x))
        x = RMSNorm(name="norm", **kw)(x).reshape(b, l_len, g, d)
        head_DxGxV = self.param(
            "head",
            nn.with_logical_partitioning(
                lambda key, shape, dtype: default_kernel_init(
                    key, (d, g * self.vocab_size), dtype
                ).reshape(shape),
                ("embed", None, "vocab"),
            ),
            (d, g, self.vocab_size),
            self.param_dtype,
        )
        return jnp.einsum("blgd,dgv->blgv", x, head_DxGxV.astype(self.dtype))


class SharedSlotHead(nn.Module):
    """Logits of a block's G slots, independent given the state, from one V-way head:
    slot k reads the state plus a learned slot vector through a residual MLP."""

    vocab_size: int
    slots: int
    mlp_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array) -> jax.Array:
        b, l_len, d = h_BxLxD.shape
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        slot_GxD = self.param(
            "slot_embedding",
            nn.with_logical_partitioning(embed_init, (None, "embed")),
            (self.slots, d),
            self.param_dtype,
        )
        x = (h_BxLxD[:, :, None] + slot_GxD).astype(self.dtype).reshape(b, l_len * self.slots, d)
        x = x + Mlp(self.mlp_dim, "gelu", name="mlp", **kw)(RMSNorm(name="mlp_norm", **kw)(x))
        x = RMSNorm(name="norm", **kw)(x)
        logits = dense(self.vocab_size, ("embed", "vocab"), name="head", **kw)(x)
        return logits.reshape(b, l_len, self.slots, self.vocab_size)


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
    group: int = 1  # g: a position covers a g×g block of tokens
    cross_attention: bool = True
    start_tokens: int = 1  # ids past the image vocabulary: BOS, or one per class (+ null)
    block_head: str = "independent"  # or "sequential" (see the module docstring)
    above_input: bool = False  # inputs hold 2G slots: the previous block, the block above
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def bos_id(self) -> int:
        return self.image_vocab_size

    @property
    def mask_id(self) -> int:
        """The input id of a position whose tokens training hides (after the start ids)."""
        return self.image_vocab_size + self.start_tokens

    @property
    def position_grid(self) -> tuple[int, int]:
        return (self.grid[0] // self.group, self.grid[1] // self.group)

    @property
    def num_positions(self) -> int:
        return self.position_grid[0] * self.position_grid[1]

    @property
    def slots(self) -> int:
        return self.group * self.group

    @property
    def sequential_head(self) -> bool:
        return self.block_head == "sequential" and self.slots > 1

    def setup(self):
        if self.block_head not in BLOCK_HEADS:
            raise ValueError(f"block_head {self.block_head!r} is not one of {BLOCK_HEADS}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # + start tokens + the mask id, rounded up so the vocab axis divides over a tensor
        # mesh axis
        embed_rows = -(-(self.mask_id + 1) // 64) * 64
        self.token_embed = GroupEmbed(embed_rows, self.dim, self.slots, self.param_dtype)
        if self.above_input:
            self.above_embed = GroupEmbed(embed_rows, self.dim, self.slots, self.param_dtype)
        self.positions = Positions2D(*self.position_grid, self.dim, self.param_dtype)
        block_cls = nn.remat(Block) if self.remat else Block
        self.layers = [
            block_cls(
                num_heads=self.num_heads,
                head_dim=self.dim // self.num_heads,
                mlp_dim=self.mlp_dim,
                mlp_kind=self.mlp_kind,
                causal=True,
                cross_attention=self.cross_attention,
                use_rope=self.rope,
                rope_theta=self.rope_theta,
                dim=self.dim,
                **kw,
            )
            for _ in range(self.num_layers)
        ]
        self.norm = RMSNorm(**kw)
        if self.sequential_head:
            self.head = SequentialBlockHead(
                self.image_vocab_size, embed_rows, self.slots, 2 * self.dim, **kw
            )
        elif self.slots == 1:
            self.head = dense(self.image_vocab_size, ("embed", "vocab"), **kw)
        elif self.block_head == "shared":
            self.head = SharedSlotHead(self.image_vocab_size, self.slots, 2 * self.dim, **kw)
        else:  # one V-way head per slot of the block
            self.head = dense((self.slots, self.image_vocab_size), ("embed", None, "vocab"), **kw)

    def _embed(self, groups_in_BxLxG: jax.Array, start) -> jax.Array:
        l_len = groups_in_BxLxG.shape[1]
        idx_L = start + jnp.arange(l_len)
        w = self.position_grid[1]
        if self.above_input:  # [previous block | block above], G slots each
            left_BxLxG, above_BxLxG = jnp.split(groups_in_BxLxG, 2, axis=-1)
            x = self.token_embed(left_BxLxG) + self.above_embed(above_BxLxG)
        else:
            x = self.token_embed(groups_in_BxLxG)
        x = x + self.positions(idx_L // w, idx_L % w)[None]
        return nn.with_logical_constraint(x.astype(self.dtype), ACT_BLD)

    def block_logits(self, h_BxLxD: jax.Array, block_BxLxG: jax.Array) -> jax.Array:
        """(B, L, G, V) float32 logits from the trunk's states; slot k's depend on
        ``block[..., :k]`` only (the independent head ignores ``block``)."""
        x = self.norm(h_BxLxD)
        if self.sequential_head:
            logits = self.head(x, block_BxLxG).astype(jnp.float32)
        elif self.slots == 1:
            logits = self.head(x).astype(jnp.float32)
            logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))
            return logits[:, :, None]
        else:
            logits = self.head(x).astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("act_batch", "act_length", None, "act_vocab"))

    def features(self, groups_in_BxPxG, e_BxSxD=None, e_mask_BxS=None) -> jax.Array:
        """The trunk's states (B, P, D) for inputs ``shift_right(target)``."""
        x = self._embed(groups_in_BxPxG, 0)
        for layer in self.layers:
            x, _ = layer(x, e_BxSxD, e_mask_BxS)
        return x

    def __call__(self, groups_in_BxPxG, e_BxSxD=None, e_mask_BxS=None, targets_BxPxG=None):
        """Teacher-forced logits (B, P, G, V) float32 for inputs ``shift_right(targets)``
        (E and its mask are None without cross-attention; ``targets`` is needed by the
        sequential head only)."""
        if targets_BxPxG is None:
            if self.sequential_head:
                raise ValueError("the sequential block head needs the targets")
            targets_BxPxG = groups_in_BxPxG  # read by no head
        return self.block_logits(self.features(groups_in_BxPxG, e_BxSxD, e_mask_BxS), targets_BxPxG)

    def memory_kv(self, e_BxSxD: jax.Array | None) -> tuple[KVCache | None, ...]:
        """Per-layer cross-attention keys/values of E (computed once per prompt); Nones
        without cross-attention."""
        if not self.cross_attention:
            return tuple(None for _ in self.layers)
        return tuple(layer.memory_kv(e_BxSxD) for layer in self.layers)

    def init_caches(self, batch: int) -> tuple[KVCache, ...]:
        """Empty self-attention caches with one slot per position."""
        hk = (self.num_heads, self.dim // self.num_heads)
        return tuple(
            init_kv_cache(batch, self.num_positions, *hk, self.dtype)
            for _ in range(self.num_layers)
        )

    def step(self, groups_in_BxLxG, index, memory_kvs, e_mask_BxS, caches):
        """The trunk's states (B, L, D) at positions [index, index + L) (``block_logits``
        turns them into logits), and the updated caches."""
        x = self._embed(groups_in_BxLxG, index)
        new_caches = []
        for layer, mkv, cache in zip(self.layers, memory_kvs, caches, strict=True):
            x, cache = layer(x, mkv, e_mask_BxS, cache=cache, cache_index=index)
            new_caches.append(cache)
        return x, tuple(new_caches)
