"""Flax CLIP vs Hugging Face's torch `CLIPModel` on a small random-weight checkpoint."""

import os

import numpy as np
import pytest

from omni_img.evals.metrics import weights

pytestmark = pytest.mark.torch


def _reference():
    torch = pytest.importorskip("torch", reason="torch not installed: CLIP parity skipped")
    transformers = pytest.importorskip(
        "transformers", reason="transformers not installed: CLIP parity skipped"
    )
    return torch, transformers


def _small_model(torch, transformers, hidden_act):
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=300,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=24,
            hidden_act=hidden_act,
            bos_token_id=298,
            eos_token_id=299,
            pad_token_id=299,
        ),
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=3,
            image_size=32,
            patch_size=8,
            hidden_act=hidden_act,
        ),
        projection_dim=40,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    # HF's init (std 0.02) keeps activations so small that gelu and quick_gelu agree to
    # 1e-4; redraw everything so activations are O(1) and a wrong detail shows.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name:
                p.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
            elif p.ndim >= 2 and "embedding" not in name:
                p.copy_(noise / np.sqrt(np.prod(p.shape[1:])))
            else:
                p.copy_(noise * (0.5 if p.ndim else 0.1))
    return model


def _inputs(rng, vocab=300, length=24, batch=5, image=32):
    ids = rng.integers(0, vocab - 2, (batch, length))
    ids[:, 0] = vocab - 2
    for row in range(batch):  # end token, then padding (= end token) after it
        ids[row, rng.integers(3, length) :] = vocab - 1
    pixels = rng.normal(size=(batch, 3, image, image)).astype(np.float32)
    return ids, pixels


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_flax_clip_matches_transformers(tmp_path, hidden_act):
    torch, transformers = _reference()
    from omni_img.evals.metrics import clip
    from omni_img.evals.metrics.clip_score import CLIPScorer

    model = _small_model(torch, transformers, hidden_act)
    model.save_pretrained(tmp_path)  # config.json + model.safetensors
    assert os.path.isfile(tmp_path / "model.safetensors")
    ids, pixels = _inputs(np.random.default_rng(0))
    with torch.no_grad():
        ref_image = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output
        ref_text = model.get_text_features(input_ids=torch.from_numpy(ids)).pooler_output

    config, params = weights.load_clip(str(tmp_path))
    scorer = CLIPScorer(config, params, tokenizer=None)
    ours_image = scorer._image(scorer.params, np.transpose(pixels, (0, 2, 3, 1)))
    ours_text = scorer._text(scorer.params, ids.astype(np.int32))
    image_diff = np.abs(np.asarray(ours_image) - ref_image.numpy()).max()
    text_diff = np.abs(np.asarray(ours_text) - ref_text.numpy()).max()
    print(f"{hidden_act}: image max abs diff {image_diff:.2e}, text {text_diff:.2e}")
    assert np.abs(ref_image.numpy()).max() > 0.5  # O(1) features: the test can fail
    assert image_diff <= 1e-4 and text_diff <= 1e-4

    # The wrong activation must be visible, or this test could not catch it.
    other = "gelu" if hidden_act == "quick_gelu" else "quick_gelu"
    wrong_cfg = clip.CLIPConfig(
        text=config.text.__class__(**{**vars(config.text), "hidden_act": other}),
        vision=config.vision.__class__(**{**vars(config.vision), "hidden_act": other}),
        projection_dim=config.projection_dim,
    )
    wrong = clip.CLIP(wrong_cfg).apply(
        {"params": params}, np.transpose(pixels, (0, 2, 3, 1)), method=clip.CLIP.image_features
    )
    assert np.abs(np.asarray(wrong) - ref_image.numpy()).max() > 1e-3


def test_clip_score_matches_torch_cosine(tmp_path):
    torch, transformers = _reference()
    from omni_img.evals.metrics import clip_score

    model = _small_model(torch, transformers, "quick_gelu")
    model.save_pretrained(tmp_path)
    config, params = weights.load_clip(str(tmp_path))
    ids, _ = _inputs(np.random.default_rng(1), batch=3)
    rng = np.random.default_rng(2)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 60), (50, 33), (32, 32)]
    ]

    class FixedIds:  # a tokenizer stand-in that returns prepared ids
        def __call__(self, texts, context_length):
            return ids[: len(texts)].astype(np.int32)

    scorer = clip_score.CLIPScorer(config, params, FixedIds())
    ours = scorer.pair_scores(images, ["a", "b", "c"])
    pixels = np.stack([clip_score.preprocess_image(im, 32) for im in images]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels))
    ref = 100 * (out.image_embeds * out.text_embeds).sum(-1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert scorer.score(images, ["a", "b", "c"]) == pytest.approx(max(ref.mean(), 0), abs=1e-3)
