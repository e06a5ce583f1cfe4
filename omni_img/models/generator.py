"""The generator: multimodal encoder + autoregressive visual-token decoder, and its loss.

Shape letters: B batch, Lt prompt length, Lh history length, h×w token grid (N = h*w),
g the group side (``group``), P = N / g² decoder positions, G = g² tokens a position,
S encoder length, D width, V image vocabulary.

Batch dict (numpy or jax arrays; optional keys may be absent):

    text_ids       (B, Lt)   int32  BOS prompt EOS, PAD-padded (Lt <= max_text_len)
    text_mask      (B, Lt)   bool   True on real tokens
    target_tokens  (B, h, w) int32  the image's VQ tokens to predict (raster order)
    source_tokens  (B, h, w) int32  optional: VQ tokens of the image being edited
    has_source     (B,)      bool   optional: False where source_tokens is a dummy
    history_ids    (B, Lh)   int32  optional: earlier turns' instructions, SEP-separated,
                                    oldest first, Lh == max_history_len
    history_mask   (B, Lh)   bool   optional

``source_*`` are read only when the config has ``use_source``; ``history_*`` only when
``max_history_len > 0``. Classifier-free guidance: ``generator_loss`` replaces the prompt
with the null prompt [BOS, EOS] and masks out the history for a random
``caption_dropout`` fraction of examples; the source image is kept (an unconditional
edit still sees its source), and the sampler's unconditional branch does the same.

A class-conditional generator (``num_classes > 0``, e.g. ImageNet) has no encoder and
reads ``class_id (B,) int32`` instead of the text keys: the decoder starts each sequence
with the class's own start token and has no cross-attention (LlamaGen's c2i layout).
The null class ``num_classes`` is its unconditional input (dropped "captions").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from omni_img.errors import UserError
from omni_img.fields import dataclass_from_mapping
from omni_img.models.ar_decoder import BLOCK_HEADS, ARDecoder, from_groups, shift_right, to_groups
from omni_img.models.encoder import Encoder
from omni_img.models.transformer import MLP_KINDS, KVCache, init_kv_cache
from omni_img.text.tokenizer import BOS_ID, EOS_ID, PAD_ID

CONDITION_KEYS = ("text_ids", "text_mask", "source_tokens", "has_source", "history_ids",
                  "history_mask", "class_id")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Model hyperparameters (the ``config.model`` block of an experiment)."""

    text_vocab_size: int = 264  # ByteTokenizer; SentencePiece: tokenizer.vocab_size
    image_vocab_size: int = 1000  # VQ codebook size (FSQ 8,5,5,5 = 1000)
    grid_h: int = 8
    grid_w: int = 8
    max_text_len: int = 64  # prompt tokens incl. BOS/EOS
    max_history_len: int = 64  # 0 = no multi-turn history segment
    use_source: bool = True  # False = text-to-image only (no source image segment)
    dim: int = 128
    num_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 4
    mlp_dim: int = 384
    mlp_kind: str = "swiglu"
    rope: bool = True
    rope_theta: float = 10000.0
    # Tokens per side of one decoder position: 2 writes a 2×2 block of tokens a step
    # (a quarter of the steps); the encoder reads the source image's blocks likewise.
    group: int = 1
    # How a block's G tokens are drawn: "independent" (one head per slot) or "sequential"
    # (slot k conditioned on slots < k); see omni_img.models.ar_decoder.
    block_head: str = "independent"
    # True: a decoder position also reads the block one position row up (the block above
    # the one it writes, 2-D context beside the raster-previous block), through a table
    # of its own; the first row reads the mask id there.
    above_input: bool = False
    text_group: int = 1  # prompt/history bytes one encoder position holds (side by side)
    num_classes: int = 0  # > 0: class-conditional (no encoder, no cross-attention)
    dtype: str = "float32"  # compute dtype: float32 or bfloat16
    param_dtype: str = "float32"
    remat: bool = False

    @property
    def grid(self) -> tuple[int, int]:
        return (self.grid_h, self.grid_w)

    @property
    def num_tokens(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def position_grid(self) -> tuple[int, int]:
        """The decoder's positions: the token grid in g×g blocks."""
        return (self.grid_h // self.group, self.grid_w // self.group)

    @property
    def num_positions(self) -> int:
        return self.num_tokens // (self.group * self.group)

    @property
    def encoder_length(self) -> int:
        """S: history + source blocks (when used) + prompt positions, the length of E."""
        source = self.num_positions if self.use_source else 0
        text = -(-self.max_history_len // self.text_group) - (-self.max_text_len // self.text_group)
        return source + text

    @property
    def bos_id(self) -> int:
        return self.image_vocab_size

    @property
    def class_conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def mask_id(self) -> int:
        """The decoder's input id for a hidden block, and for no block above the first row."""
        return self.bos_id + (self.num_classes + 1 if self.class_conditional else 1)

    @property
    def null_class(self) -> int:
        """The class id of the unconditional (classifier-free guidance) input."""
        return self.num_classes


def condition_batch_size(cond: Mapping[str, Any]) -> int:
    """Rows of a conditioning dict (text or class)."""
    return (cond["class_id"] if "class_id" in cond else cond["text_ids"]).shape[0]


def start_tokens(cfg: GeneratorConfig, cond: Mapping[str, jax.Array]) -> jax.Array:
    """The decoder's first input per row (B,) int32: BOS, or the class's start token."""
    if cfg.class_conditional:
        return cfg.bos_id + jnp.asarray(cond["class_id"], jnp.int32)
    return jnp.full((condition_batch_size(cond),), cfg.bos_id, jnp.int32)


def decoder_inputs(cfg: GeneratorConfig, target_BxPxG: jax.Array, start_B) -> jax.Array:
    """The decoder's teacher-forcing inputs for target blocks: (B, P, G), each position's
    previous block (``start_B`` before the first); with ``above_input`` (B, P, 2G), those
    followed by the block above each target block (the mask id in the first row)."""
    left_BxPxG = shift_right(target_BxPxG, start_B)
    if not cfg.above_input:
        return left_BxPxG
    cols = cfg.position_grid[1]
    none_above = jnp.full_like(target_BxPxG[:, :cols], cfg.mask_id)
    above_BxPxG = jnp.concatenate([none_above, target_BxPxG[:, :-cols]], axis=1)
    return jnp.concatenate([left_BxPxG, above_BxPxG], axis=-1)


def step_inputs(cfg: GeneratorConfig, prev_CxG: jax.Array, groups_BxPxG, t) -> jax.Array:
    """The decoder's input at position ``t`` while sampling, (C, G) or (C, 2G): the block
    just written, and with ``above_input`` the block above position ``t`` from ``groups``
    (the B prompts' blocks so far; repeated for C = k·B rows, as CFG doubles them)."""
    if not cfg.above_input:
        return prev_CxG
    cols = cfg.position_grid[1]
    up_BxG = jax.lax.dynamic_index_in_dim(groups_BxPxG, jnp.maximum(t - cols, 0), 1, False)
    up_BxG = jnp.where(t >= cols, up_BxG, cfg.mask_id).astype(prev_CxG.dtype)
    up_CxG = jnp.tile(up_BxG, (prev_CxG.shape[0] // up_BxG.shape[0], 1))
    return jnp.concatenate([prev_CxG, up_CxG], axis=-1)


def as_generator_config(model_cfg: Any) -> GeneratorConfig:
    """A validated GeneratorConfig from itself, a dict or an ``ml_collections.ConfigDict``
    (the ``config.model`` block); UserError naming the key otherwise."""
    if isinstance(model_cfg, GeneratorConfig):
        return check_generator_config(model_cfg)
    return check_generator_config(dataclass_from_mapping(GeneratorConfig, model_cfg, "model"))


def check_generator_config(cfg: GeneratorConfig) -> GeneratorConfig:
    """``cfg``, once every value the modules would refuse at initialisation (with a
    ValueError deep in a trace) is checked here; UserError naming the key otherwise."""
    sizes = ("image_vocab_size", "grid_h", "grid_w", "max_text_len", "dim", "num_heads",
             "dec_layers", "mlp_dim", "group", "text_group", "text_vocab_size")  # fmt: skip
    for key in sizes:
        if not isinstance(getattr(cfg, key), int) or getattr(cfg, key) < 1:
            raise UserError(f"generator: model.{key}={getattr(cfg, key)!r} must be an int ≥ 1")
    dtypes = ("float32", "bfloat16")
    choices = {"block_head": BLOCK_HEADS, "mlp_kind": MLP_KINDS, "dtype": dtypes,
               "param_dtype": dtypes}  # fmt: skip
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(
                f"generator: model.{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}"
            )
    if cfg.grid_h % cfg.group or cfg.grid_w % cfg.group:
        raise UserError(
            f"generator: model.group={cfg.group} does not divide the token grid "
            f"{cfg.grid_h}x{cfg.grid_w}"
        )
    # A decoder position embeds group² tokens side by side, an encoder position text_group
    # bytes: each gets an equal share of the width.
    slots = {f"model.group²={cfg.group**2}": cfg.group**2,
             f"model.text_group={cfg.text_group}": cfg.text_group}  # fmt: skip
    for shown, count in slots.items():
        if cfg.dim % count:
            raise UserError(f"generator: model.dim={cfg.dim} does not split into {shown} slots")
    return cfg


class Generator(nn.Module):
    """Encoder + AR decoder. Methods for ``apply(..., method=...)``: ``__call__`` (training
    logits), ``encode``, ``memory_kv``, ``step`` (one incremental decode call: states),
    ``features`` (the decoder's states without a cache), ``block_logits`` (states ->
    logits)."""

    cfg: GeneratorConfig

    def setup(self):
        c = self.cfg
        kw = dict(
            dim=c.dim,
            num_heads=c.num_heads,
            mlp_dim=c.mlp_dim,
            mlp_kind=c.mlp_kind,
            remat=c.remat,
            dtype=jnp.dtype(c.dtype),
            param_dtype=jnp.dtype(c.param_dtype),
        )
        self.decoder = ARDecoder(
            image_vocab_size=c.image_vocab_size,
            grid=c.grid,
            group=c.group,
            num_layers=c.dec_layers,
            rope=c.rope,
            rope_theta=c.rope_theta,
            cross_attention=not c.class_conditional,
            start_tokens=c.num_classes + 1 if c.class_conditional else 1,
            block_head=c.block_head,
            above_input=c.above_input,
            **kw,
        )
        if c.class_conditional:
            return
        self.encoder = Encoder(
            text_vocab_size=c.text_vocab_size,
            image_vocab_size=c.image_vocab_size,
            max_text_len=c.max_text_len,
            max_history_len=c.max_history_len,
            grid=c.grid if c.use_source else None,
            group=c.group,
            text_group=c.text_group,
            num_layers=c.enc_layers,
            **kw,
        )

    def encode(self, cond: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Conditioning dict (batch keys other than target_tokens) -> E_BxSxD, mask_BxS
        ((None, None) for a class-conditional model: the class is the start token)."""
        c = self.cfg
        if c.class_conditional:
            return None, None
        optional = {}
        if c.use_source and "source_tokens" in cond:
            optional["source_tokens_Bxhxw"] = cond["source_tokens"]
            optional["has_source_B"] = cond.get("has_source")
        if c.max_history_len > 0 and "history_ids" in cond:
            optional["history_ids_BxLh"] = cond["history_ids"]
            optional["history_mask_BxLh"] = cond["history_mask"]
        return self.encoder(cond["text_ids"], cond["text_mask"], **optional)

    def __call__(self, batch: Mapping[str, jax.Array], hidden_BxP=None) -> jax.Array:
        """Teacher-forced logits_BxNxV (float32) for ``batch['target_tokens']``, in the
        token grid's raster order whatever the grouping. ``hidden_BxP`` (bool, optional):
        decoder positions whose input block is replaced by the mask id."""
        c = self.cfg
        e_BxSxD, e_mask_BxS = self.encode(batch)
        target_BxPxG = to_groups(batch["target_tokens"], c.group)
        groups_in_BxPxG = decoder_inputs(c, target_BxPxG, start_tokens(c, batch))
        if hidden_BxP is not None:
            groups_in_BxPxG = jnp.where(hidden_BxP[..., None], c.mask_id, groups_in_BxPxG)
        logits_BxPxGxV = self.decoder(groups_in_BxPxG, e_BxSxD, e_mask_BxS, target_BxPxG)
        logits_BxhxwxV = from_groups(logits_BxPxGxV, c.grid_h, c.grid_w, c.group)
        return logits_BxhxwxV.reshape(logits_BxhxwxV.shape[0], c.num_tokens, -1)

    def memory_kv(self, e_BxSxD: jax.Array) -> tuple[KVCache, ...]:
        return self.decoder.memory_kv(e_BxSxD)

    def step(self, groups_in_BxLxG, index, memory_kvs, e_mask_BxS, caches):
        """See ``ARDecoder.step``: the decoder's states (B, L, D) at positions
        [index, index + L), and the caches."""
        return self.decoder.step(groups_in_BxLxG, index, memory_kvs, e_mask_BxS, caches)

    def features(self, groups_in_BxPxG, e_BxSxD, e_mask_BxS) -> jax.Array:
        """See ``ARDecoder.features``: the decoder's states (B, P, D), no cache."""
        return self.decoder.features(groups_in_BxPxG, e_BxSxD, e_mask_BxS)

    def block_logits(self, h_BxLxD, block_BxLxG) -> jax.Array:
        """See ``ARDecoder.block_logits``: (B, L, G, V) float32."""
        return self.decoder.block_logits(h_BxLxD, block_BxLxG)


def make_generator(model_cfg: Any) -> Generator:
    """The Generator for a GeneratorConfig, dict or ConfigDict (bad keys: UserError)."""
    return Generator(as_generator_config(model_cfg))


def init_caches(cfg: GeneratorConfig, batch: int) -> tuple[KVCache, ...]:
    """Empty per-layer self-attention caches (B, P, H, K) for decoding ``batch`` rows."""
    hk = (cfg.num_heads, cfg.dim // cfg.num_heads)
    return tuple(
        init_kv_cache(batch, cfg.num_positions, *hk, jnp.dtype(cfg.dtype))
        for _ in range(cfg.dec_layers)
    )


def drop_condition(
    cond: Mapping[str, jax.Array], drop_B: jax.Array, null_class: int | None = None
) -> dict[str, jax.Array]:
    """Replace the prompt with [BOS, EOS] and mask the history where ``drop_B`` is True
    (a class-conditional dict: the class with ``null_class``)."""
    cond = dict(cond)
    if "class_id" in cond:
        if null_class is None:
            raise ValueError("dropping a class condition needs the null class id")
        cond["class_id"] = jnp.where(drop_B, null_class, cond["class_id"])
        return cond
    text_ids, text_mask = cond["text_ids"], cond["text_mask"]
    length = text_ids.shape[1]
    null_ids_L = (
        jnp.full((length,), PAD_ID, text_ids.dtype)
        .at[:2]
        .set(jnp.array([BOS_ID, EOS_ID], text_ids.dtype))
    )
    null_mask_L = jnp.arange(length) < 2
    drop_B1 = drop_B[:, None]
    cond["text_ids"] = jnp.where(drop_B1, null_ids_L, text_ids)
    cond["text_mask"] = jnp.where(drop_B1, null_mask_L, text_mask.astype(bool))
    if "history_mask" in cond:
        cond["history_mask"] = cond["history_mask"].astype(bool) & ~drop_B1
    return cond


def unconditional(
    cond: Mapping[str, jax.Array], null_class: int | None = None
) -> dict[str, jax.Array]:
    """The classifier-free-guidance unconditional twin of a conditioning dict."""
    return drop_condition(cond, jnp.ones((condition_batch_size(cond),), bool), null_class)


def generator_loss(
    params: Any,
    batch: Mapping[str, jax.Array],
    rng: jax.Array | None = None,
    *,
    model: Generator,
    caption_dropout: float = 0.0,
    input_masking: float = 0.0,
    foreground_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token cross-entropy over the target grid (weighted mean), and metrics.

    ``params``: the model's ``params`` collection (boxed or unboxed). ``rng`` drives
    caption dropout and input masking (required when either is > 0).

    ``input_masking``: the largest share of decoder positions (after the first) whose
    input block -- the previous block of the target -- is hidden behind the mask id; each
    example draws its share uniformly from [0, input_masking]. Teacher forcing lets a
    decoder read most of an object off the blocks already written (its shape from its
    upper rows) and never learn it from the prompt; an example with most of its inputs
    hidden can only be predicted from the prompt, one with few still trains plain
    continuation. Sampling never hides anything.

    ``foreground_weight``: the weight of every token that differs from its image's most
    common token (the background's code, on scenes drawn on a plain colour), relative to
    1 for the tokens equal to it. The background is most of a grid and learnt in a few
    hundred steps; the objects, signs and letters that decide what the image shows are a
    fifth of it, so their share of the gradient is what this raises. The reported
    ``nll`` stays the plain mean.

    Metrics: ``loss`` (the weighted mean), ``nll``, ``token_accuracy`` (argmax == target),
    ``caption_dropped`` (fraction dropped).
    """
    batch = dict(batch)
    b = batch["target_tokens"].shape[0]
    if (caption_dropout > 0.0 or input_masking > 0.0) and rng is None:
        raise ValueError("caption_dropout or input_masking > 0 needs an rng")
    dropped = jnp.zeros((b,), bool)
    if caption_dropout > 0.0:
        dropped = jax.random.bernoulli(jax.random.fold_in(rng, 0), caption_dropout, (b,))
        batch = drop_condition(batch, dropped, model.cfg.null_class)
    hidden_BxP = None
    if input_masking > 0.0:
        p = model.cfg.num_positions
        share_Bx1 = input_masking * jax.random.uniform(jax.random.fold_in(rng, 1), (b, 1))
        hidden_BxP = jax.random.bernoulli(jax.random.fold_in(rng, 2), share_Bx1, (b, p))
        hidden_BxP = hidden_BxP & (jnp.arange(p) > 0)  # the start token stays
    logits_BxNxV = model.apply({"params": params}, batch, hidden_BxP)
    target_BxN = batch["target_tokens"].reshape(b, -1)
    logp = jax.nn.log_softmax(logits_BxNxV, axis=-1)
    nll_BxN = -jnp.take_along_axis(logp, target_BxN[..., None], axis=-1)[..., 0]
    nll = jnp.mean(nll_BxN)
    loss = nll
    if foreground_weight != 1.0:
        weight_BxN = token_weights(target_BxN, model.cfg.image_vocab_size, foreground_weight)
        loss = jnp.sum(weight_BxN * nll_BxN) / jnp.sum(weight_BxN)
    accuracy = jnp.mean(jnp.argmax(logits_BxNxV, axis=-1) == target_BxN)
    metrics = {
        "loss": loss,
        "nll": nll,
        "token_accuracy": accuracy,
        "caption_dropped": jnp.mean(dropped.astype(jnp.float32)),
    }
    return loss, metrics


def token_weights(target_BxN: jax.Array, vocab_size: int, foreground_weight: float) -> jax.Array:
    """`foreground_weight` where a token differs from its image's most common token, else 1."""
    counts_BxV = jax.vmap(lambda row: jnp.bincount(row, length=vocab_size))(target_BxN)
    background_Bx1 = jnp.argmax(counts_BxV, axis=-1)[:, None]
    return jnp.where(target_BxN == background_Bx1, 1.0, foreground_weight)


def count_params(params: Any) -> int:
    """Total number of parameters in a (possibly boxed or abstract) params tree."""
    leaves = jax.tree.leaves(nn.unbox(params))
    return int(sum(x.size for x in leaves))
