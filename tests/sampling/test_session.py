"""Edits and sessions: conditioning on the last image and earlier turns, truncation, I/O."""

import jax
import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.models import encoder as enc
from omni_img.models import generator as g
from omni_img.sampling import session as ses
from omni_img.sampling.ar import SamplingConfig
from omni_img.text.tokenizer import SEP_ID, ByteTokenizer
from tests.support.tiny_configs import small_generator

TOK = ByteTokenizer()
CFG = small_generator(
    image_vocab_size=64, grid_h=4, grid_w=4, max_text_len=24, max_history_len=48,
    dim=32, num_heads=2, enc_layers=1, dec_layers=2, mlp_dim=64,
)  # fmt: skip
GREEDY = SamplingConfig(temperature=0.0)


def fake_encode_image(images):
    """A stand-in VQ tokenizer: 16×16 RGB -> 4×4 grid of ids in [0, 64)."""
    b, h, w, _ = images.shape
    cells = images.reshape(b, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4, 5))
    return (cells.astype(np.int32) % 64).astype(np.int32)


def encoder_view(cond):
    """What the encoder reads for a conditioning dict."""
    return enc.encoder_inputs(
        cond["text_ids"], cond["text_mask"], grid=CFG.grid, max_history_len=CFG.max_history_len,
        source_tokens_Bxhxw=cond["source_tokens"], has_source_B=cond["has_source"],
        history_ids_BxLh=cond["history_ids"], history_mask_BxLh=cond["history_mask"],
    )  # fmt: skip


def segment(inp, name):
    start, length = inp.segments[name]
    ids = np.asarray(inp.ids_BxS[0, start : start + length])
    return ids[np.asarray(inp.mask_BxS[0, start : start + length])]


@pytest.fixture(scope="module")
def model_params():
    model = g.make_generator(CFG)
    cond = ses.edit_conditioning(TOK, "a red cube", CFG)
    params = jax.jit(model.init)(
        jax.random.key(0), dict(cond, target_tokens=np.zeros((1, 4, 4), np.int32))
    )
    return model, params["params"]


def test_three_turn_session_refers_to_the_last_image(model_params, tmp_path):
    model, params = model_params
    s = ses.Session.for_model(CFG, TOK)
    first = s.conditioning("a red cube on the left")
    view = encoder_view(first)
    assert segment(view, "source").size == 0 and segment(view, "history").size == 0
    t1 = s.run(model, params, "a red cube on the left", jax.random.key(1), GREEDY)
    assert t1.shape == (4, 4)

    second = s.conditioning("now make it blue")
    view = encoder_view(second)
    np.testing.assert_array_equal(segment(view, "source"), t1.reshape(-1))  # "it" = turn 1
    assert segment(view, "history").tolist() == [*TOK.encode("a red cube on the left"), SEP_ID]
    assert TOK.decode(segment(view, "text")) == "now make it blue"
    t2 = s.run(model, params, "now make it blue", jax.random.key(2), GREEDY)

    third = encoder_view(s.conditioning("make it bigger"))
    np.testing.assert_array_equal(segment(third, "source"), t2.reshape(-1))
    want = [*TOK.encode("a red cube on the left"), SEP_ID, *TOK.encode("now make it blue"), SEP_ID]
    assert segment(third, "history").tolist() == want
    s.run(model, params, "make it bigger", jax.random.key(3), GREEDY)
    assert len(s.turns) == 3

    s.save(tmp_path / "sess")
    back = ses.Session.load(tmp_path / "sess")
    assert [t.instruction for t in back.turns] == [t.instruction for t in s.turns]
    for a, b in zip(back.turns, s.turns):
        np.testing.assert_array_equal(a.tokens, b.tokens)
    for k, v in s.conditioning("again").items():
        np.testing.assert_array_equal(back.conditioning("again")[k], v)


def test_truncation_drops_the_oldest_turn_not_the_newest():
    s = ses.Session.for_model(CFG, TOK)  # history budget: 48 ids
    grid = np.zeros((4, 4), np.int32)
    for i, text in enumerate(["first: a big green star", "second: now red", "third: smaller"]):
        s.add_turn(text, grid + i)
    hist_ids = segment(encoder_view(s.conditioning("fourth")), "history")
    hist = TOK.decode(hist_ids)
    assert "first" not in hist and "second: now red" in hist and "third: smaller" in hist
    assert hist.index("second") < hist.index("third") and len(hist_ids) <= 48
    assert s.history_turns() == 2
    np.testing.assert_array_equal(s.last_image(), grid + 2)


def test_pack_history_keeps_whole_turns_only():
    assert ses.pack_history(TOK, ["old", "x" * 60], 10) == ([], 0)
    ids, kept = ses.pack_history(TOK, ["abc", "de"], 10)
    assert kept == 2 and ids == [*TOK.encode("abc"), SEP_ID, *TOK.encode("de"), SEP_ID]


def test_pack_history_counts_word_aligned_length():
    aligned = ByteTokenizer(word_slots=4)
    # "ab cd" + SEP is 6 bytes but 12 ids aligned ("ab", " cd", SEP, one position each).
    ids, kept = ses.pack_history(aligned, ["ab cd", "ef"], 12)
    assert kept == 1 and ids == aligned.layout([*TOK.encode("ef"), SEP_ID])
    ids, kept = ses.pack_history(aligned, ["ab cd", "ef"], 20)
    assert kept == 2 and len(ids) % 4 == 1 and len(ids) == 17  # the last SEP starts a position
    assert ids[8:12] == [SEP_ID, 0, 0, 0] and ids[12] == TOK.encode("e")[0]


def test_edit_conditions_on_the_source_image(model_params):
    model, params = model_params
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    tokens = ses.edit(model, params, TOK, fake_encode_image, image, "make it blue",
                      jax.random.key(0), GREEDY, image_size=(16, 16))  # fmt: skip
    assert tokens.shape == (1, 4, 4)
    src = ses.tokenize_source(fake_encode_image, image, CFG)
    cond = ses.edit_conditioning(TOK, "make it blue", CFG, src)
    np.testing.assert_array_equal(segment(encoder_view(cond), "source"), src.reshape(-1))


def test_image_conversion_and_bad_images():
    rgb = np.full((16, 16, 3), 7, np.uint8)
    assert ses.prepare_image(rgb).shape == (1, 16, 16, 3)
    grey = ses.prepare_image(np.full((16, 16), 9, np.uint8))
    assert grey.shape == (1, 16, 16, 3) and (grey == 9).all()
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent -> white
    assert (ses.prepare_image(rgba) == 255).all()
    resized = ses.prepare_image(np.zeros((20, 30, 3), np.uint8), (16, 16), resize=True)
    assert resized.shape == (1, 16, 16, 3)
    with pytest.raises(UserError, match="source image is 30x20, the tokenizer takes 16x16"):
        ses.prepare_image(np.zeros((20, 30, 3), np.uint8), (16, 16))
    with pytest.raises(UserError, match="must be uint8"):
        ses.prepare_image(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(UserError, match="must be \\(H, W, 3\\)"):
        ses.prepare_image(np.zeros((16, 16, 2), np.uint8))
    # An image tokenizer whose grid is not the model's (e.g. an image of the wrong size).
    with pytest.raises(UserError, match="source token grid has shape"):
        ses.tokenize_source(lambda im: np.zeros((1, 8, 4), np.int32), rgb, CFG)


def test_bad_turn_inputs_are_user_errors():
    s = ses.Session.for_model(CFG, TOK)
    with pytest.raises(UserError, match="source token grid has shape \\(1, 8, 8\\)"):
        s.add_turn("x", np.zeros((8, 8), np.int32))
    with pytest.raises(UserError, match="must lie in"):
        s.add_turn("x", np.full((4, 4), 64))
    with pytest.raises(UserError, match="prompt is empty"):
        s.conditioning("  ")
    with pytest.raises(UserError, match="longer than the context"):
        s.conditioning("y" * 200)
    with pytest.raises(UserError, match="not valid UTF-8"):
        s.conditioning(b"\xff\xfe")
    with pytest.raises(UserError, match="text-to-image only"):
        ses.edit_conditioning(TOK, "x", small_generator(use_source=False), np.zeros((8, 8)))
