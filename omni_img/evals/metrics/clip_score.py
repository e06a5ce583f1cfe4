"""CLIP score of (image, caption) pairs, as torchmetrics computes it.

score_i = 100 * cos(E_image_i, E_text_i) for each pair; the reported CLIP score is
max(mean_i score_i, 0) — torchmetrics' `CLIPScore.compute()` clamps the mean, not each
pair (the two agree whenever every cosine is positive, as with real CLIP weights).

Images go through the Hugging Face `CLIPImageProcessor` recipe (what torchmetrics uses):
shortest side resized to `image_size` with PIL bicubic, centre crop (offsets rounded
down, as HF does; torchvision rounds), scaled to [0, 1], normalised with OpenAI's mean and
std. Text goes through `omni_img.evals.metrics.clip_tokenizer` (HF's `CLIPTokenizer` rules),
truncated to the model's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from omni_img.errors import UserError

OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def preprocess_image(image_HxWx3: np.ndarray, size: int = 224) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> normalised float32 (size, size, 3), HF CLIP recipe."""
    from PIL import Image

    image = np.asarray(image_HxWx3)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise UserError(f"CLIP expects uint8 RGB images (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if height <= width else (new_long, size)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    crop = resized[top : top + size, left : left + size].astype(np.float32) / 255.0
    return (crop - OPENAI_MEAN) / OPENAI_STD


class CLIPScorer:
    """Embeds images and captions with a Flax CLIP and scores pairs.

    config/params: from `omni_img.evals.metrics.weights.load_clip`; tokenizer: a
    `clip_tokenizer.CLIPTokenizer` (its ids must fit the checkpoint's vocabulary).
    """

    def __init__(self, config: Any, params: Any, tokenizer: Any, batch_size: int = 32) -> None:
        import jax

        from omni_img.evals.metrics import clip

        self.config = config
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        model = clip.CLIP(config)
        self.params = jax.device_put(params)
        self._image = jax.jit(
            lambda p, x: model.apply({"params": p}, x, method=clip.CLIP.image_features)
        )
        self._text = jax.jit(
            lambda p, ids: model.apply({"params": p}, ids, method=clip.CLIP.text_features)
        )

    def image_embeddings(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(B, P) projected image features (not normalised) of uint8 RGB images."""
        size = self.config.vision.image_size
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = np.stack(
                [preprocess_image(im, size) for im in images[start : start + self.batch_size]]
            )
            out.append(np.asarray(self._image(self.params, pixels)))
        return np.concatenate(out) if out else np.zeros((0, self.config.projection_dim), np.float32)

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(B, P) projected text features (not normalised) of captions."""
        length = self.config.text.max_position_embeddings
        out = []
        for start in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(
                list(texts[start : start + self.batch_size]), context_length=length
            )
            if ids.max() >= self.config.text.vocab_size:
                raise UserError("the CLIP tokenizer's ids exceed this checkpoint's vocabulary")
            out.append(np.asarray(self._text(self.params, ids)))
        return np.concatenate(out) if out else np.zeros((0, self.config.projection_dim), np.float32)

    def pair_scores(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(B,) 100 * cos(image_i, text_i), unclamped."""
        if len(images) != len(texts):
            raise UserError(
                f"CLIP score needs one caption per image: {len(images)} vs {len(texts)}"
            )
        return pair_scores(self.image_embeddings(images), self.text_embeddings(texts))

    def score(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> float:
        """torchmetrics' CLIP score: max(mean(100 * cos), 0)."""
        return clip_score_from_pairs(self.pair_scores(images, texts))


def pair_scores(image_BxP: np.ndarray, text_BxP: np.ndarray) -> np.ndarray:
    """(B,) 100 * cosine similarity of matching rows, in float64."""
    a = np.asarray(image_BxP, np.float64)
    b = np.asarray(text_BxP, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return 100.0 * np.sum(a * b, axis=-1)


def clip_score_from_pairs(scores: np.ndarray) -> float:
    """max(mean(scores), 0), as torchmetrics' `CLIPScore.compute()`."""
    if len(scores) == 0:
        raise UserError("CLIP score of zero pairs")
    return float(max(np.mean(scores), 0.0))
