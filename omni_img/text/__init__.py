"""Tokenizers; text: byte-level UTF-8 (default) or SentencePiece, one interface."""

from omni_img.text.tokenizer import (
    BOS_ID,
    EOS_ID,
    NUM_RESERVED,
    PAD_ID,
    SEP_ID,
    ByteTokenizer,
    SentencePieceTokenizer,
    TextTokenizer,
    encode_batch,
    encode_prompt,
    from_json,
    make_text_tokenizer,
    null_prompt,
    pad_ids,
)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "NUM_RESERVED",
    "PAD_ID",
    "SEP_ID",
    "ByteTokenizer",
    "SentencePieceTokenizer",
    "TextTokenizer",
    "encode_batch",
    "encode_prompt",
    "from_json",
    "make_text_tokenizer",
    "null_prompt",
    "pad_ids",
]
