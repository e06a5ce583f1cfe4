"""Band geometry of the rolling decoder: its config, how an image is cut into bands and
patches, which token rows a band may see, and the embeddings of pixel positions and
noise levels. Pure functions of the config; the model is in ``rolling_decoder``.

Shape letters: B batch, N bands in the image, n bands in one call, R band height in
pixels, W image width, P patch tokens per band, L = n·P tokens in a call, S keys,
M memory slots, F = p·p·3 features of one patch, Q coordinates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omni_img.errors import UserError
from omni_img.fields import as_mapping, check_known_keys
from omni_img.models.tokenizer import TokenizerConfig, tokenizer_config_from_mapping

Array = jax.Array

# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class RollingDecoderConfig:
    """Hyperparameters of the rolling decoder (model and sampler).

    The default is the tiny CPU model: 64×64 images, 4 bands of 16 rows, 8×8 token grid,
    width 128. Band height is derived: image_height / num_bands.
    """

    image_height: int = 64
    image_width: int = 64
    num_bands: int = 4  # N
    steps_per_band: int = 8  # K: denoising steps every band gets, in both sampling modes
    window: int = 2  # W: bands denoised at once in rolling mode; must divide K
    patch_size: int = 4
    token_rows: int = 8  # h of the VQ token grid
    token_cols: int = 8  # w
    codebook_size: int = 1000
    text_dim: int = 128  # E
    dim: int = 128  # D
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4
    lookahead_rows: int = 1  # token rows below a band's cover that it may attend to
    rolling_train_prob: float = 0.5  # share of training examples drawn as a rolling window
    # The tokenizer whose conv decoder is the base the model refines (None: no base).
    base_tokenizer: TokenizerConfig | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"

    @property
    def band_height(self) -> int:
        return self.image_height // self.num_bands

    @property
    def patches_per_band(self) -> int:
        return (self.band_height // self.patch_size) * (self.image_width // self.patch_size)

    @property
    def patch_features(self) -> int:
        return self.patch_size * self.patch_size * 3

    def rows_needed(self, band: int) -> int:
        """Token rows band `band` attends to: the rows covering it plus the look-ahead."""
        cover = -(-(band + 1) * self.token_rows // self.num_bands)  # ceil((g+1)·h/N)
        return min(self.token_rows, cover + self.lookahead_rows)

    def validate(self) -> RollingDecoderConfig:
        """Raises UserError naming the bad key; returns self."""
        positive = (
            "image_height image_width num_bands steps_per_band window patch_size token_rows "
            "token_cols codebook_size text_dim dim num_layers num_heads mlp_ratio"
        ).split()
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise UserError(f"rolling decoder: {key} must be ≥ 1, got {getattr(self, key)}")
        if self.image_height % self.num_bands:
            raise UserError(
                f"rolling decoder: num_bands={self.num_bands} does not divide "
                f"image_height={self.image_height}"
            )
        if self.band_height % self.patch_size or self.image_width % self.patch_size:
            raise UserError(
                f"rolling decoder: patch_size={self.patch_size} does not divide the band "
                f"({self.band_height}×{self.image_width} px)"
            )
        if self.steps_per_band % self.window:
            raise UserError(
                f"rolling decoder: window={self.window} does not divide "
                f"steps_per_band={self.steps_per_band}"
            )
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise UserError(
                f"rolling decoder: dim={self.dim} must split into num_heads={self.num_heads} "
                "heads of even size"
            )
        if self.dim % 4:
            raise UserError(f"rolling decoder: dim={self.dim} must be a multiple of 4")
        if self.lookahead_rows < 0:
            raise UserError("rolling decoder: lookahead_rows must be ≥ 0")
        if not 0.0 <= self.rolling_train_prob <= 1.0:
            raise UserError("rolling decoder: rolling_train_prob must lie in [0, 1]")
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in ("float32", "bfloat16", "float16"):
                raise UserError(f"rolling decoder: unknown {key} {getattr(self, key)!r}")
        return self


def rolling_decoder_config(
    cfg: RollingDecoderConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> RollingDecoderConfig:
    """Builds a validated config from a dataclass, a mapping or ConfigDict, plus overrides.

    Unknown keys raise UserError naming the key.
    """
    if cfg is None:
        values: dict[str, Any] = {}
    elif isinstance(cfg, RollingDecoderConfig):
        values = dataclasses.asdict(cfg)
    else:
        values = as_mapping(cfg, "model")
    values.update(overrides)
    check_known_keys(RollingDecoderConfig, values, "model")
    base = values.get("base_tokenizer")
    if base is not None and not isinstance(base, TokenizerConfig):  # a dict, e.g. from JSON
        values["base_tokenizer"] = tokenizer_config_from_mapping(base)
    return RollingDecoderConfig(**values).validate()


# ----------------------------------------------------------------------------- layout


def image_to_bands(x_BxHxWx3: Array, num_bands: int) -> Array:
    """(B, H, W, 3) → (B, N, R, W, 3) with R = H / N."""
    b, h, w, c = x_BxHxWx3.shape
    return x_BxHxWx3.reshape(b, num_bands, h // num_bands, w, c)


def bands_to_image(x_BxNxRxWx3: Array) -> Array:
    """(B, N, R, W, 3) → (B, N·R, W, 3)."""
    b, n, r, w, c = x_BxNxRxWx3.shape
    return x_BxNxRxWx3.reshape(b, n * r, w, c)


def patchify(x_BxnxRxWx3: Array, p: int) -> Array:
    """(B, n, R, W, 3) → (B, n·P, F); patches row-major inside a band."""
    b, n, r, w, c = x_BxnxRxWx3.shape
    x = x_BxnxRxWx3.reshape(b, n, r // p, p, w // p, p, c)
    x = x.transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, n * (r // p) * (w // p), p * p * c)


def unpatchify(x_BxLxF: Array, n: int, r: int, w: int, p: int) -> Array:
    """Inverse of `patchify`: (B, n·P, F) → (B, n, R, W, 3)."""
    b = x_BxLxF.shape[0]
    x = x_BxLxF.reshape(b, n, r // p, w // p, p, p, 3)
    x = x.transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, n, r, w, 3)


def sincos_2d(y_Q: Array, x_Q: Array, dim: int) -> Array:
    """2-D sinusoidal embedding of pixel coordinates: (Q,), (Q,) → (Q, dim) float32.

    Patches and visual tokens both use pixel-centre coordinates, so a patch and the
    token that covers it get nearby embeddings. Coordinates may be traced (the band
    index is dynamic in the sampler).
    """
    quarter = dim // 4
    freqs = 1.0 / (10_000.0 ** (jnp.arange(quarter, dtype=jnp.float32) / quarter))
    ay = jnp.asarray(y_Q, jnp.float32)[:, None] * freqs
    ax = jnp.asarray(x_Q, jnp.float32)[:, None] * freqs
    return jnp.concatenate([jnp.sin(ay), jnp.cos(ay), jnp.sin(ax), jnp.cos(ax)], 1)


def timestep_embedding(t: Array, dim: int) -> Array:
    """Sinusoidal embedding of noise levels t ∈ [0, 1]: (...,) → (..., dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
    a = (t[..., None] * 1000.0) * freqs
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)], -1)


# ----------------------------------------------------------------------------- visibility


def band_causal_mask(query_band_L: Array, key_band_S: Array) -> Array:
    """(L, S) bool: a token may attend to keys of its own band and the bands above it."""
    return key_band_S[None, :] <= query_band_L[:, None]


def memory_rows(cfg: RollingDecoderConfig, text_len: int) -> np.ndarray:
    """Token row of each memory slot, (M,) int32; text slots get −1 (always visible)."""
    rows = np.repeat(np.arange(cfg.token_rows), cfg.token_cols)
    return np.concatenate([rows, -np.ones(text_len, np.int64)]).astype(np.int32)


def rows_needed_traced(cfg: RollingDecoderConfig, band_ids: Array) -> Array:
    """`cfg.rows_needed` for traced band indices."""
    cover = -((-(band_ids + 1) * cfg.token_rows) // cfg.num_bands)
    return jnp.minimum(cfg.token_rows, cover + cfg.lookahead_rows)
