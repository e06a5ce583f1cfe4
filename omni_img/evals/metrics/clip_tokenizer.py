"""CLIP's byte-level BPE tokenizer in plain Python, matching Hugging Face's `CLIPTokenizer`.

The vocabulary is OpenAI's `bpe_simple_vocab_16e6.txt.gz` (49,408 ids: 256 bytes, the
same 256 with the end-of-word mark `</w>`, 48,894 merges, `<|startoftext|>` = 49406,
`<|endoftext|>` = 49407); `omni-img eval fetch-weights` caches it.

Text normalisation follows Hugging Face `transformers` 5.x, whose `CLIPTokenizer` is what
`CLIPModel` checkpoints and torchmetrics' CLIP score use: NFC, every whitespace run -> one
space, lower-case character by character. OpenAI's original tokenizer also runs `ftfy`
and HTML-unescapes (`&amp;` -> `&`, curly quotes and ligatures repaired), so its ids differ
on such text; plain text gives the same ids.

Pre-tokens are, at each position, the first that matches of: a special token, the
contractions 's 't 're 've 'm 'll 'd, a run of letters (Unicode L*), one number character
(N*), a run of anything else that is not whitespace. Each pre-token's UTF-8 bytes are
mapped to printable characters and merged by BPE rank.
"""

from __future__ import annotations

import functools
import gzip
import unicodedata

import numpy as np

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode White_Space (what the Rust regex engine behind `tokenizers` calls \s); Python's
# str.isspace() also counts U+001C..U+001F, which would split differently.
_WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character, as GPT-2 and CLIP map them (no whitespace/control)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _kind(char: str) -> str:
    """'s' whitespace, 'L' letter, 'N' number, 'P' anything else."""
    if char in _WHITESPACE:
        return "s"
    category = unicodedata.category(char)[0]
    return category if category in ("L", "N") else "P"


def normalize(text: str) -> str:
    """NFC, whitespace runs -> one space, per-character lower case (as `tokenizers` does)."""
    text = unicodedata.normalize("NFC", text)
    out, in_space = [], False
    for char in text:
        if char in _WHITESPACE:
            if not in_space:
                out.append(" ")
            in_space = True
        else:
            out.append(char.lower())
            in_space = False
    return "".join(out)


def pre_tokenize(text: str) -> list[str]:
    """Split normalised text into pre-tokens (see the module docstring for the rules)."""
    tokens, i, n = [], 0, len(text)
    while i < n:
        char = text[i]
        kind = _kind(char)
        if kind == "s":
            i += 1
            continue
        special = next((s for s in (SOT, EOT) if text.startswith(s, i)), None)
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if special or contraction:
            token = special or contraction
        elif kind == "N":
            token = char
        else:
            j = i + 1
            while j < n and _kind(text[j]) == kind:
                j += 1
            token = text[i:j]
        tokens.append(token)
        i += len(token)
    return tokens


class CLIPTokenizer:
    """`tokenizer(texts) -> (B, 77) int32 ids`: <|startoftext|> text <|endoftext|> pad.

    Text longer than the context is truncated to 75 BPE tokens (as HF does with
    `truncation=True`); padding uses `pad_id` (HF checkpoints: <|endoftext|>; open_clip: 0).
    """

    def __init__(self, vocab_path: str) -> None:
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars]
        vocab += ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.vocab_size = len(vocab)
        self._bpe = functools.lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = {(word[k], word[k + 1]) for k in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, k = [], 0
            while k < len(word):
                if k < len(word) - 1 and (word[k], word[k + 1]) == best:
                    merged.append(word[k] + word[k + 1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without start/end tokens."""
        ids = []
        for token in pre_tokenize(normalize(text)):
            if token in (SOT, EOT):
                ids.append(self.encoder[token])
                continue
            mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self._bpe(mapped))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of BPE ids (special tokens dropped; end-of-word marks become spaces)."""
        pieces = []
        for i in ids:
            token = self.decoder[int(i)]
            if token in (SOT, EOT):
                continue
            end = token.endswith("</w>")
            token = token[:-4] if end else token
            pieces.append(bytes(self.byte_decoder[c] for c in token) + (b" " if end else b""))
        return b"".join(pieces).decode("utf-8", errors="replace").strip()

    def __call__(
        self,
        texts: str | list[str],
        context_length: int = CONTEXT_LENGTH,
        pad_id: int | None = None,
    ) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        pad = self.eot_id if pad_id is None else pad_id
        out = np.full((len(texts), context_length), pad, np.int32)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text)[: context_length - 2], self.eot_id]
            out[row, : len(ids)] = ids
        return out
