"""Text tokenizers: round trips, reserved ids, JSON descriptions, bad input."""

import json

import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.text import tokenizer as tt


def test_byte_round_trip_and_reserved_ids():
    tok = tt.ByteTokenizer()
    for s in ["a red cube", "zyxwvq", "naïve café ☕"]:
        ids = tok.encode(s)
        assert min(ids) >= tt.NUM_RESERVED and max(ids) < tok.vocab_size
        assert tok.decode(ids) == s
    assert tok.encode(b"ab") == tok.encode("ab")
    assert tok.vocab_size == 264


def test_encode_batch_pads_and_masks():
    tok = tt.ByteTokenizer()
    ids, mask = tt.encode_batch(tok, ["ab", "abcd"], 8)
    assert ids.dtype == np.int32 and ids.shape == (2, 8) and mask.dtype == bool
    assert ids[0, :4].tolist() == [tt.BOS_ID, *tok.encode("ab"), tt.EOS_ID]
    assert mask.sum(1).tolist() == [4, 6]
    assert (ids[~mask] == tt.PAD_ID).all()
    null_ids, null_mask = tt.null_prompt(3, 8)
    assert null_ids[:, :2].tolist() == [[tt.BOS_ID, tt.EOS_ID]] * 3 and null_mask.sum() == 6


def test_json_round_trip():
    tok = tt.ByteTokenizer()
    desc = json.loads(json.dumps(tok.to_json()))
    assert tt.from_json(desc) == tok
    with pytest.raises(UserError, match="unknown text tokenizer"):
        tt.from_json({"kind": "wordpiece"})


@pytest.mark.parametrize(
    "prompt, match",
    [
        ("", "prompt is empty"),
        ("   \n", "prompt is empty"),
        ("x" * 100, "longer than the context"),
        (b"caf\xe9", "not valid UTF-8"),
        ("bad \udc80", "not valid Unicode"),
        (123, "must be text"),
    ],
)
def test_bad_prompts_are_user_errors(prompt, match):
    with pytest.raises(UserError, match=match) as info:
        tt.encode_prompt(tt.ByteTokenizer(), prompt, max_len=32)
    assert "\n" not in str(info.value)


def test_prompt_that_just_fits():
    tok = tt.ByteTokenizer()
    assert len(tt.encode_prompt(tok, "x" * 30, 32)) == 32
    with pytest.raises(UserError):
        tt.encode_prompt(tok, "x" * 31, 32)


def test_sentencepiece_option(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    words = ["red", "green", "blue", "cube", "ball", "star", "left", "right", "small", "big"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 5)) for _ in range(300)))
    spm.SentencePieceTrainer.Train(
        input=str(corpus),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=28,
        model_type="unigram",
        minloglevel=2,
    )
    tok = tt.make_text_tokenizer("sentencepiece", str(tmp_path / "sp.model"))
    ids = tok.encode("a big red star")
    assert min(ids) >= tt.NUM_RESERVED and max(ids) < tok.vocab_size
    assert tok.decode(ids) == "a big red star"
    again = tt.from_json(json.loads(json.dumps(tok.to_json())))
    assert again == tok and again.encode("blue cube") == tok.encode("blue cube")
    with pytest.raises(UserError, match="not valid UTF-8"):
        tok.encode(b"\xff")


def test_sentencepiece_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        tt.make_text_tokenizer("sentencepiece")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install sentencepiece"):
            tt.make_text_tokenizer("sentencepiece", str(bad))
    else:
        with pytest.raises(UserError, match="not a SentencePiece model"):
            tt.make_text_tokenizer("sentencepiece", str(bad))


def test_word_aligned_layout_starts_every_word_on_a_position():
    tok = tt.ByteTokenizer(word_slots=4)
    ids = tt.encode_prompt(tok, "a red star", 32)
    pad, sp = tt.PAD_ID, tt.SPACE_ID
    a, r, e, d, s, t = (ord(c) + tt.NUM_RESERVED for c in "aredst")
    # BOS, then "a", " red", " sta" + "r" (a word longer than a position runs on), EOS.
    assert ids == [tt.BOS_ID, pad, pad, pad, a, pad, pad, pad, sp, r, e, d,
                   sp, s, t, a, r, pad, pad, pad, tt.EOS_ID]  # fmt: skip

    def positions(prompt):
        laid_out = tt.encode_prompt(tok, prompt, 64)
        return np.array(laid_out + [pad] * (-len(laid_out) % 4)).reshape(-1, 4).tolist()

    # The same word is laid out the same way wherever it stands in the prompt.
    later = positions("one big red star")
    assert [sp, r, e, d] in later and [sp, s, t, a] in later
    assert tok.decode(ids) == "a red star"  # the padding reads as nothing
    assert tt.from_json(json.loads(json.dumps(tok.to_json()))) == tok != tt.ByteTokenizer()
    assert tt.ByteTokenizer(word_slots=1).layout(ids[:5]) == ids[:5]


def test_word_aligned_prompt_over_the_context_names_both_lengths():
    tok = tt.ByteTokenizer(word_slots=8)
    # 19 bytes, 10 words: BOS and the words take 11 positions of 8, then EOS: 89 ids.
    with pytest.raises(UserError, match=r"prompt is 19 tokens \(89 ids with its words aligned\)"):
        tt.encode_prompt(tok, "a b c d e f g h i j", 64)
    with pytest.raises(UserError, match="word-aligned text is for the bytes tokenizer"):
        tt.make_text_tokenizer("sentencepiece", "model.spm", word_slots=8)
