"""CLIP BPE tokenizer: ids equal to transformers' `CLIPTokenizer` on varied text."""

import gzip
import itertools
import random

import numpy as np
import pytest

from omni_img.evals.metrics import clip_tokenizer, weights


def _vocab_path():
    path = weights.find(weights.CLIP_BPE_VOCAB)
    if path is None:
        pytest.skip("CLIP BPE vocabulary not cached: run `omni-img eval fetch-weights`")
    return path


def _strings(count=240):
    """Deterministic mix: captions, punctuation, digits, contractions, many scripts."""
    words = [
        "a",
        "red",
        "Circle",
        "photo",
        "of",
        "the",
        "BIG",
        "star's",
        "don't",
        "we'll",
        "naïve",
        "café",
        "Zürich",
        "東京",
        "タワー",
        "привет",
        "ΟΔΟΣ",
        "İstanbul",
        "ß",
        "😀",
        "👍🏽",
        "½",
        "²",
        "Ⅻ",
        "١٢٣",
        "x²",
        "3.14",
        "1,000",
        "e-mail",
        "C++",
        "#hashtag",
        "@user",
        "50%",
        "$9.99",
        "(left)",
        "[x]",
        "{y}",
        "...",
        "?!",
        "—",
        "“quoted”",
        "&amp;",
        "ﬁne",
        "ＦＵＬＬ",
        "a\tb",
        "new\nline",
        "nbsp\u00a0here",
        "é",
        "ﬀ",
        "ǅ",
        "ǈ",
        "hello,world",
        "it's",
        "I'M",
        "'quote'",
        "''",
        "CamelCase",
    ]
    rng = random.Random(0)
    out = [" ".join(rng.sample(words, rng.randint(1, 8))) for _ in range(count - 40)]
    # Random code points from several blocks, including marks and symbols.
    blocks = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x300, 0x36F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x590, 0x6FF),
        (0x900, 0x97F),
        (0x2000, 0x206F),
        (0x2150, 0x218F),
        (0x3040, 0x30FF),
        (0x4E00, 0x4E80),
        (0xAC00, 0xAC80),
        (0x1F300, 0x1F64F),
    ]
    for _ in range(40):
        chars = [chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 20))]
        out.append("".join(chars))
    return out


def _reference(vocab_path):
    transformers = pytest.importorskip(
        "transformers", reason="transformers not installed: tokenizer parity skipped"
    )
    with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    ours = clip_tokenizer.CLIPTokenizer(vocab_path)
    merges = [tuple(line.split()) for line in lines]
    return ours, transformers.CLIPTokenizer(vocab=ours.encoder, merges=merges)


def test_ids_match_transformers():
    ours, ref = _reference(_vocab_path())
    strings = _strings()
    assert len(strings) >= 200
    matches = sum(ours.encode(s) == ref(s, add_special_tokens=False)["input_ids"] for s in strings)
    print(f"tokenizer: {matches}/{len(strings)} strings give identical ids")
    assert matches == len(strings)


def test_padded_truncated_batch_matches_transformers():
    ours, ref = _reference(_vocab_path())
    texts = ["a photo of a dog", " ".join(itertools.repeat("many words", 60)), "Ünïcödé!"]
    expected = ref(texts, padding="max_length", truncation=True, max_length=77)["input_ids"]
    np.testing.assert_array_equal(ours(texts), np.array(expected))


def test_structure_without_reference():
    ours = clip_tokenizer.CLIPTokenizer(_vocab_path())
    assert ours.vocab_size == 49408
    assert (ours.sot_id, ours.eot_id) == (49406, 49407)
    ids = ours(["A photo of a cat."], context_length=10, pad_id=0)
    assert ids.shape == (1, 10) and ids[0, 0] == 49406 and 49407 in ids[0]
    assert ours.decode(ours.encode("A photo of a cat.")) == "a photo of a cat ."
    assert clip_tokenizer.pre_tokenize("it's 42!!") == ["it", "'s", "4", "2", "!!"]
