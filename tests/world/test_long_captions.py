"""Web captions longer than the encoder's context are cut to fit in training, not fatal."""

import pytest

from omni_img.errors import UserError
from omni_img.stages.generator import training_prompt_ids
from omni_img.text.tokenizer import BOS_ID, EOS_ID, encode_prompt, make_text_tokenizer

LONG = " ".join(f"word{i}" for i in range(60))  # 60 words, ~400 bytes


def test_a_long_caption_loses_its_last_words_until_it_fits():
    tokenizer = make_text_tokenizer("bytes")
    with pytest.raises(UserError, match="longer than the context"):
        encode_prompt(tokenizer, LONG, 64)
    ids = training_prompt_ids(tokenizer, LONG, 64)
    assert len(ids) <= 64 and ids[0] == BOS_ID and ids[-1] == EOS_ID
    kept = tokenizer.decode(ids[1:-1])
    assert LONG.startswith(kept) and len(kept.split()) > 5  # whole words, from the start


def test_a_caption_that_fits_is_encoded_exactly_as_written():
    tokenizer = make_text_tokenizer("bytes")
    caption = "two  spaces\\nand a newline"
    assert training_prompt_ids(tokenizer, caption, 64) == encode_prompt(tokenizer, caption, 64)
    with pytest.raises(UserError, match="empty"):
        training_prompt_ids(tokenizer, "   ", 64)
