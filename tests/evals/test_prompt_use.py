"""The word-swap test of omni_img.evals.prompt_use: captions, record choice, NLL sums."""

import jax
import numpy as np
import pytest

from omni_img.evals import prompt_use
from omni_img.models import generator as g
from omni_img.text.tokenizer import ByteTokenizer
from omni_img.world.spec import Scene, Shape, spec_to_json
from tests.support.tiny_configs import small_generator


def test_swapped_caption_keeps_plurals_and_articles():
    swap = prompt_use.swapped_caption
    assert swap("two red crosses on blue", "shape", "cross") == "two red circles on blue"
    assert swap("a big red star at the top", "shape", "star") == "a big red cross at the top"
    assert swap("A red circle", "colour", "red") == "An orange circle"
    assert swap("an orange circle in an image", "colour", "orange") == (
        "a yellow circle in an image"
    )
    assert swap("a hollow ring", "shape", "circle") is None  # a synonym: not swapped
    assert swap("a redder circle", "colour", "red") is None  # whole words only


BLUE_CIRCLE_RIGHT = Shape("circle", "blue", position="right")


def _record(caption, objects, task="compose", background=0, object_token=5):
    target = np.full((4, 4), background, np.int16)
    target[1:3, 1:3] = object_token
    return {
        "task": task,
        "caption": caption,
        "spec": spec_to_json(Scene("white", tuple(objects))),
        "target_tokens": target,
        "source_tokens": np.zeros((4, 4), np.int16),
        "has_source": False,
        "history": "[]",
    }


def test_only_single_object_compose_records_with_plain_words_are_used():
    red_star = Shape("star", "red", position="left")
    records = [
        _record("a red star", [red_star]),
        _record("a red star and a blue circle", [red_star, BLUE_CIRCLE_RIGHT]),
        _record("a crimson star", [red_star]),  # colour synonym
        _record("a red star", [red_star], task="edit"),
    ]
    chosen = prompt_use.eligible_records(records, ("shape", "colour"))
    assert [r["caption"] for r in chosen] == ["a red star"]
    assert len(prompt_use.eligible_records(records, ("shape",))) == 2


@pytest.fixture(scope="module")
def tiny_generator():
    cfg = small_generator(
        image_vocab_size=64, grid_h=4, grid_w=4, max_text_len=32, max_history_len=8,
        dim=32, num_heads=2, enc_layers=1, dec_layers=2, mlp_dim=64,
    )  # fmt: skip
    model = g.make_generator(cfg)
    example = {
        "text_ids": np.zeros((1, 32), np.int32),
        "text_mask": np.ones((1, 32), bool),
        "target_tokens": np.zeros((1, 4, 4), np.int32),
        "source_tokens": np.zeros((1, 4, 4), np.int32),
        "has_source": np.zeros((1,), bool),
        "history_ids": np.zeros((1, 8), np.int32),
        "history_mask": np.zeros((1, 8), bool),
    }
    params = jax.jit(model.init)(jax.random.key(0), example)["params"]
    return model, params, ByteTokenizer()


def test_nll_sums_the_object_tokens_only(tiny_generator):
    model, params, text = tiny_generator
    shape = [Shape("square", "green")]
    record = _record("a green square", shape)
    flat = dict(record, target_tokens=np.zeros((4, 4), np.int16))  # no object token
    nll = prompt_use.object_token_nll(model, params, text, [record, flat])
    assert nll[0] > 0.0 and nll[1] == 0.0


def test_word_reliance_reports_the_difference_of_the_two_nlls(tiny_generator):
    model, params, text = tiny_generator
    records = [
        _record("a green square", [Shape("square", "green")], object_token=7),
        _record("a blue star", [Shape("star", "blue")], object_token=9),
        _record(
            "a red star and a blue circle",
            [Shape("star", "red", position="left"), BLUE_CIRCLE_RIGHT],
        ),
    ]
    report = prompt_use.word_reliance(model, params, text, records)
    for attribute in ("shape", "colour"):
        row = report[attribute]
        assert row["n"] == 2
        assert row["increase"] == pytest.approx(row["nll_swapped"] - row["nll_true"])
        assert row["nll_swapped"] != row["nll_true"]  # the prompt reaches the decoder
        assert 0.0 <= row["share_increased"] <= 1.0
    with pytest.raises(ValueError, match="unknown attributes"):
        prompt_use.word_reliance(model, params, text, records, attributes=("size",))
    with pytest.raises(ValueError, match="no single-object compose record"):
        prompt_use.word_reliance(model, params, text, records[2:])


def test_encoder_probe_scores_held_out_records(tiny_generator):
    model, params, text = tiny_generator
    shapes, colours = ("square", "star", "circle", "cross"), ("green", "blue", "red", "pink")
    records = [
        _record(f"a {colour} {shape}", [Shape(shape, colour)])
        for shape in shapes
        for colour in colours
    ]
    accuracy = prompt_use.encoder_probe(model, params, text, records)
    assert set(accuracy) == {"shape", "colour"}
    assert all(0.0 <= a <= 1.0 for a in accuracy.values())
    with pytest.raises(ValueError, match="at least 8"):
        prompt_use.encoder_probe(model, params, text, records[:4])
