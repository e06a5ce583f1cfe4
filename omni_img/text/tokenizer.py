"""Text tokenizers: byte-level UTF-8 (default, no vocabulary file) and SentencePiece.

Both share the reserved ids below, so the model code never depends on the choice:

    0 PAD, 1 BOS, 2 EOS, 3 SEP (between turns of a session), 4..7 reserved.

The byte tokenizer maps UTF-8 byte b to id b + 8 (vocabulary 264) and so spells any word,
including words never seen in training. The SentencePiece tokenizer maps piece id p to
p + 8; its model file is embedded (base64) in ``to_json()`` so a checkpoint carries it.

``encode`` returns the raw ids of a text (no BOS/EOS); ``encode_prompt`` adds BOS/EOS and
checks the prompt; ``encode_batch`` pads a list of prompts to ``(B, L)`` int32 ids and a
bool mask. Problems with a user's text raise ``omni_img.errors.UserError``.

Word-aligned bytes (``ByteTokenizer(word_slots=G)``, for an encoder that reads G ids a
position): ``layout`` pads the id sequence with PAD so that every word starts a new
position. Without it a word lands in the G-id positions at any of G offsets (" star"
read as " st" + "ar", or " s" + "tar"), and the encoder has to learn each word G times
over; with it a word always fills its position(s) the same way, and a word of up to G
bytes (with its leading space) is one position. A word starts at a space, at EOS and
SEP, and right after BOS and SEP; longer words run on into the next positions.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from omni_img.errors import UserError

PAD_ID, BOS_ID, EOS_ID, SEP_ID = 0, 1, 2, 3
NUM_RESERVED = 8


class TextTokenizer(Protocol):
    """What the encoder, the trainer and the sampler need from a text tokenizer."""

    vocab_size: int

    def encode(self, text: str | bytes) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def layout(self, ids: Sequence[int]) -> list[int]:
        """A segment's ids (from its first position) as the encoder's positions hold them."""
        ...

    def to_json(self) -> dict[str, Any]: ...


def as_text(text: str | bytes) -> str:
    """A str from a str or UTF-8 bytes; anything else is a UserError."""
    if isinstance(text, bytes | bytearray):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            bad = text[e.start]
            raise UserError(
                f"prompt is not valid UTF-8 (byte 0x{bad:02x} at position {e.start})"
            ) from None
    if not isinstance(text, str):
        raise UserError(f"prompt must be text, got {type(text).__name__}")
    return text


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"prompt is not valid Unicode (unpaired surrogate at position {e.start})"
        ) from None


SPACE_ID = ord(" ") + NUM_RESERVED


class ByteTokenizer:
    """UTF-8 bytes shifted past the reserved ids; ``word_slots`` > 1: word-aligned layout."""

    kind = "bytes"
    vocab_size = 256 + NUM_RESERVED

    def __init__(self, word_slots: int = 0):
        if word_slots < 0:
            raise ValueError(f"word_slots must be >= 0, got {word_slots}")
        self.word_slots = int(word_slots)

    def encode(self, text: str | bytes) -> list[int]:
        return [b + NUM_RESERVED for b in _utf8(as_text(text))]

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - NUM_RESERVED for i in ids if int(i) >= NUM_RESERVED)
        return data.decode("utf-8", errors="replace")

    def layout(self, ids: Sequence[int]) -> list[int]:
        return align_words(ids, self.word_slots) if self.word_slots > 1 else list(ids)

    def to_json(self) -> dict[str, Any]:
        if self.word_slots > 1:
            return {"kind": self.kind, "word_slots": self.word_slots}
        return {"kind": self.kind}

    def __eq__(self, other) -> bool:
        return isinstance(other, ByteTokenizer) and other.word_slots == self.word_slots

    def __hash__(self) -> int:
        return hash((self.kind, self.word_slots))


def align_words(ids: Sequence[int], slots: int) -> list[int]:
    """``ids`` with PAD inserted so that each word starts at a multiple of ``slots``."""
    out: list[int] = []
    previous = None
    for token in ids:
        token = int(token)
        starts_word = token in (SPACE_ID, EOS_ID, SEP_ID) or previous in (BOS_ID, SEP_ID)
        if starts_word and len(out) % slots:
            out.extend([PAD_ID] * (slots - len(out) % slots))
        out.append(token)
        previous = token
    return out


def _import_sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise UserError(
            "the sentencepiece text tokenizer needs the 'sentencepiece' package: "
            "pip install sentencepiece"
        ) from None
    return sentencepiece


class SentencePieceTokenizer:
    """A SentencePiece model; piece ids shifted past the reserved ids."""

    kind = "sentencepiece"

    def __init__(self, model_path: str | None = None, *, model_proto: bytes | None = None):
        if (model_path is None) == (model_proto is None):
            raise ValueError("give exactly one of model_path or model_proto")
        spm = _import_sentencepiece()
        if model_path is not None:
            try:
                with open(model_path, "rb") as f:
                    model_proto = f.read()
            except OSError as e:
                raise UserError(f"cannot read SentencePiece model {model_path}: {e}") from None
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError by version
            raise UserError(f"not a SentencePiece model: {e}") from None
        self.vocab_size = self._sp.GetPieceSize() + NUM_RESERVED

    def encode(self, text: str | bytes) -> list[int]:
        text = as_text(text)
        _utf8(text)
        return [i + NUM_RESERVED for i in self._sp.EncodeAsIds(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.DecodeIds([int(i) - NUM_RESERVED for i in ids if int(i) >= NUM_RESERVED])

    def layout(self, ids: Sequence[int]) -> list[int]:
        return list(ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sha256": hashlib.sha256(self.model_proto).hexdigest(),
            "model_proto_base64": base64.b64encode(self.model_proto).decode("ascii"),
        }

    def __eq__(self, other) -> bool:
        return isinstance(other, SentencePieceTokenizer) and other.model_proto == self.model_proto

    def __hash__(self) -> int:
        return hash(self.model_proto)


def from_json(desc: dict[str, Any]) -> TextTokenizer:
    """Rebuild a tokenizer from its ``to_json()`` description."""
    kind = desc.get("kind")
    if kind == "bytes":
        return ByteTokenizer(int(desc.get("word_slots", 0)))
    if kind == "sentencepiece":
        proto = base64.b64decode(desc["model_proto_base64"])
        if "sha256" in desc and hashlib.sha256(proto).hexdigest() != desc["sha256"]:
            raise UserError("SentencePiece model in the tokenizer description fails its sha256")
        return SentencePieceTokenizer(model_proto=proto)
    raise UserError(f"unknown text tokenizer kind {kind!r} (bytes or sentencepiece)")


def make_text_tokenizer(
    kind: str = "bytes", model_path: str | None = None, word_slots: int = 0
) -> TextTokenizer:
    """The tokenizer named in a config: ``bytes`` (word-aligned for ``word_slots`` > 1) or
    ``sentencepiece`` (with model_path)."""
    if kind == "bytes":
        return ByteTokenizer(word_slots)
    if word_slots > 1:
        raise UserError(
            f"word-aligned text is for the bytes tokenizer, not {kind!r} "
            "(set text_align_words=False)"
        )
    if kind == "sentencepiece":
        if not model_path:
            raise UserError("text tokenizer 'sentencepiece' needs a model_path")
        return SentencePieceTokenizer(model_path)
    raise UserError(f"unknown text tokenizer kind {kind!r} (bytes or sentencepiece)")


def encode_prompt(tok: TextTokenizer, text: str | bytes, max_len: int) -> list[int]:
    """[BOS] + ids + [EOS] of a prompt, in the tokenizer's layout; empty or over-long
    prompts are UserErrors."""
    text = as_text(text)
    if not text.strip():
        raise UserError("prompt is empty")
    raw = [BOS_ID, *tok.encode(text), EOS_ID]
    ids = tok.layout(raw)
    if len(ids) > max_len:
        aligned = f" ({len(ids)} ids with its words aligned)" if len(ids) != len(raw) else ""
        raise UserError(
            f"prompt is {len(raw) - 2} tokens{aligned}, longer than the context of "
            f"{max_len - 2}; shorten it"
        )
    return ids


def pad_ids(rows: Sequence[Sequence[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists to ``(B, max_len)`` int32 ids and a bool mask (True = token)."""
    ids = np.full((len(rows), max_len), PAD_ID, np.int32)
    mask = np.zeros((len(rows), max_len), bool)
    for i, row in enumerate(rows):
        if len(row) > max_len:
            raise ValueError(f"row {i} has {len(row)} ids, more than {max_len}")
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def encode_batch(
    tok: TextTokenizer, texts: Sequence[str | bytes], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> ids ``(B, max_len)`` int32 and mask ``(B, max_len)`` bool."""
    return pad_ids([encode_prompt(tok, t, max_len) for t in texts], max_len)


def null_prompt(batch: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The empty prompt [BOS, EOS]: the unconditional input of classifier-free guidance.
    Never laid out word-aligned: it is one fixed input, the same in training (caption
    dropout) and sampling, not a prompt the encoder has to read."""
    return pad_ids([[BOS_ID, EOS_ID]] * batch, max_len)
