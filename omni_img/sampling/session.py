"""Edits and multi-turn sessions: conditioning on a source image and on earlier turns.

An edit is (source image, instruction) -> image. The source image is tokenized by the
VQ tokenizer, given here as a callable ``encode_image(images uint8 (B,H,W,3)) -> tokens
(B,h,w)`` so this module does not depend on the tokenizer's code.

A ``Session`` keeps the turns so far: each turn's instruction and the token grid it
produced. The next turn's conditioning is

    text    = the new instruction,
    source  = the last image's tokens (the previous turn's output, or the image the
              session started from), so "now make it blue" refers to that image,
    history = earlier instructions, oldest first, SEP-separated, packed newest-first into
              ``max_history_len`` ids: the oldest turns are dropped first.

A session is plain data: ``save(prefix)`` writes ``prefix.json`` (instructions, sizes,
the tokenizer's description) and ``prefix.npz`` (token grids); ``Session.load(prefix)``
reads them back without pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from omni_img.errors import UserError
from omni_img.models.generator import Generator, GeneratorConfig
from omni_img.sampling.ar import DEFAULT_SAMPLING, SamplingConfig, sample
from omni_img.sampling.conditioning import conditioning, pack_history
from omni_img.text.tokenizer import TextTokenizer, as_text, encode_prompt, from_json

EncodeImage = Callable[[np.ndarray], Any]
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- source images


def prepare_image(
    image: Any, image_size: tuple[int, int] | None = None, *, resize: bool = False
) -> np.ndarray:
    """A source image as uint8 ``(B, H, W, 3)``.

    Accepts a PIL image, or a uint8 array (H,W), (H,W,1|3|4) or (B,H,W,1|3|4): grey is
    repeated to RGB, alpha is composited onto white. If ``image_size`` (H, W) is given and
    differs, the image is resized (``resize=True``, bicubic) or refused with a UserError.
    """
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        image = np.asarray(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise UserError(f"source image must be uint8 RGB, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
        raise UserError(f"source image must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        arr = np.round(arr[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if image_size is not None and tuple(arr.shape[1:3]) != tuple(image_size):
        (h, w), (th, tw) = arr.shape[1:3], image_size
        if not resize:
            raise UserError(
                f"source image is {w}x{h}, the tokenizer takes {tw}x{th} images; resize it"
            )
        from PIL import Image

        arr = np.stack(
            [np.asarray(Image.fromarray(a).resize((tw, th), Image.BICUBIC)) for a in arr]
        )
    return arr


def check_token_grid(tokens: Any, grid: tuple[int, int], vocab_size: int | None = None):
    """Token grid(s) as int32 ``(B, h, w)``; a wrong size or out-of-range id is a UserError."""
    arr = np.asarray(tokens)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or tuple(arr.shape[1:]) != tuple(grid):
        raise UserError(
            f"source token grid has shape {tuple(arr.shape)}, the model takes "
            f"{grid[0]}x{grid[1]} grids (is the image the size the tokenizer expects?)"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"source tokens must be integers, got {arr.dtype}")
    if vocab_size is not None and arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise UserError(f"source token ids must lie in [0, {vocab_size})")
    return arr.astype(np.int32)


def tokenize_source(
    encode_image: EncodeImage,
    image: Any,
    cfg: GeneratorConfig,
    *,
    image_size: tuple[int, int] | None = None,
    resize: bool = False,
) -> np.ndarray:
    """Source image(s) -> checked token grids int32 ``(B, h, w)``."""
    tokens = encode_image(prepare_image(image, image_size, resize=resize))
    return check_token_grid(np.asarray(tokens), cfg.grid, cfg.image_vocab_size)


# --------------------------------------------------------------------------- conditioning


def edit_conditioning(
    tok: TextTokenizer,
    instruction: str | bytes,
    cfg: GeneratorConfig,
    source_tokens: Any = None,
    history: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """A batch-of-one conditioning dict for the generator (see ``models.generator``): the
    prompt must fit as written; a source image only for a model that reads one."""
    prompt_ids = encode_prompt(tok, instruction, cfg.max_text_len)
    if source_tokens is not None:
        if not cfg.use_source:
            raise UserError("this model is text-to-image only: it cannot take a source image")
        source_tokens = check_token_grid(source_tokens, cfg.grid, cfg.image_vocab_size)
    return conditioning(
        tok,
        prompt_ids,
        cfg,
        source_tokens=source_tokens,
        has_source=source_tokens is not None,
        history=history,
        source_keys=cfg.use_source,
    )


def edit(
    model: Generator,
    params: Any,
    tok: TextTokenizer,
    encode_image: EncodeImage,
    source_image: Any,
    instruction: str | bytes,
    rng: jax.Array,
    scfg: SamplingConfig = DEFAULT_SAMPLING,
    *,
    image_size: tuple[int, int] | None = None,
    resize: bool = False,
) -> np.ndarray:
    """Edit one image: tokenize it, condition on it and the instruction; tokens (1, h, w)."""
    source = tokenize_source(encode_image, source_image, model.cfg, image_size=image_size,
                             resize=resize)  # fmt: skip
    if source.shape[0] != 1:
        raise UserError(f"edit takes one source image, got {source.shape[0]}")
    cond = edit_conditioning(tok, instruction, model.cfg, source)
    return np.asarray(sample(model, params, cond, rng, scfg))


# --------------------------------------------------------------------------- sessions


@dataclasses.dataclass
class Turn:
    """One turn: the instruction and the token grid (h, w) int32 it produced."""

    instruction: str
    tokens: np.ndarray


@dataclasses.dataclass
class Session:
    """The turns of a multi-turn session and the budget they must fit (plain data)."""

    tokenizer: TextTokenizer
    grid: tuple[int, int]
    max_text_len: int
    max_history_len: int
    image_vocab_size: int
    source_tokens: np.ndarray | None = None  # (h, w): the image the session started from
    turns: list[Turn] = dataclasses.field(default_factory=list)

    @classmethod
    def for_model(cls, cfg: GeneratorConfig, tokenizer: TextTokenizer, source_tokens=None):
        """An empty session sized for a generator config (optionally from a start image)."""
        if not cfg.use_source:
            raise UserError("sessions need a model that takes a source image (use_source)")
        s = cls(tokenizer, cfg.grid, cfg.max_text_len, cfg.max_history_len, cfg.image_vocab_size)
        if source_tokens is not None:
            s.source_tokens = s._check(source_tokens)
        return s

    def _check(self, tokens) -> np.ndarray:
        arr = check_token_grid(tokens, self.grid, self.image_vocab_size)
        if arr.shape[0] != 1:
            raise UserError(f"a session turn has one image, got {arr.shape[0]}")
        return arr[0]

    def last_image(self) -> np.ndarray | None:
        """Tokens (h, w) of the image the next instruction refers to, or None."""
        return self.turns[-1].tokens if self.turns else self.source_tokens

    def history_turns(self) -> int:
        """How many of the earlier turns fit in the history budget (newest ones)."""
        instructions = [t.instruction for t in self.turns]
        return pack_history(self.tokenizer, instructions, self.max_history_len)[1]

    def conditioning(self, instruction: str | bytes) -> dict[str, np.ndarray]:
        """The generator's conditioning dict (batch of one) for the next instruction."""
        cfg = GeneratorConfig(
            text_vocab_size=self.tokenizer.vocab_size,
            image_vocab_size=self.image_vocab_size,
            grid_h=self.grid[0],
            grid_w=self.grid[1],
            max_text_len=self.max_text_len,
            max_history_len=self.max_history_len,
        )
        history = [t.instruction for t in self.turns]
        return edit_conditioning(self.tokenizer, instruction, cfg, self.last_image(), history)

    def add_turn(self, instruction: str | bytes, tokens: Any) -> None:
        """Record a finished turn (its tokens become the next turn's source)."""
        self.turns.append(Turn(as_text(instruction), self._check(tokens)))

    def run(
        self,
        model: Generator,
        params: Any,
        instruction: str | bytes,
        rng: jax.Array,
        scfg: SamplingConfig = DEFAULT_SAMPLING,
    ) -> np.ndarray:
        """Sample the next image for ``instruction``, record the turn; tokens (h, w)."""
        if tuple(model.cfg.grid) != tuple(self.grid):
            raise UserError(f"model grid {model.cfg.grid} != session grid {self.grid}")
        tokens = np.asarray(sample(model, params, self.conditioning(instruction), rng, scfg))[0]
        self.add_turn(instruction, tokens)
        return tokens

    # ---- plain-data persistence: JSON + npz, no pickle

    def save(self, prefix: str | os.PathLike) -> None:
        """Write ``prefix.json`` and ``prefix.npz``."""
        prefix = os.fspath(prefix)
        meta = {
            "format": "omni_img.session",
            "version": FORMAT_VERSION,
            "tokenizer": self.tokenizer.to_json(),
            "grid": list(self.grid),
            "max_text_len": self.max_text_len,
            "max_history_len": self.max_history_len,
            "image_vocab_size": self.image_vocab_size,
            "has_source": self.source_tokens is not None,
            "turns": [t.instruction for t in self.turns],
        }
        arrays = {f"turn_{i}": t.tokens for i, t in enumerate(self.turns)}
        if self.source_tokens is not None:
            arrays["source"] = self.source_tokens
        with open(prefix + ".json", "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=1)
        np.savez(prefix + ".npz", **arrays)

    @classmethod
    def load(cls, prefix: str | os.PathLike) -> Session:
        """Read a session written by ``save``."""
        prefix = os.fspath(prefix)
        try:
            with open(prefix + ".json", encoding="utf-8") as f:
                meta = json.load(f)
            npz = np.load(prefix + ".npz", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read session {prefix}: {e}") from None
        if meta.get("format") != "omni_img.session" or meta.get("version") != FORMAT_VERSION:
            raise UserError(f"{prefix}.json is not an omni_img session (version {FORMAT_VERSION})")
        with npz:
            s = cls(
                tokenizer=from_json(meta["tokenizer"]),
                grid=tuple(meta["grid"]),
                max_text_len=meta["max_text_len"],
                max_history_len=meta["max_history_len"],
                image_vocab_size=meta["image_vocab_size"],
                source_tokens=npz["source"].astype(np.int32) if meta["has_source"] else None,
                turns=[Turn(text, npz[f"turn_{i}"].astype(np.int32))
                       for i, text in enumerate(meta["turns"])],
            )  # fmt: skip
        return s
