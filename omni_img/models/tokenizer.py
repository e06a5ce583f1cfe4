"""The VQ image tokenizer: conv encoder -> quantizer -> conv decoder.

Letters in tensor names: B batch, H/W height/width (pixels or grid), C channels,
D latent dim, h/w token-grid height/width.

Downsampling is space-to-depth followed by a dense layer, and upsampling a dense
layer followed by depth-to-space: on CPU, XLA runs these far faster than strided or
transposed convolutions, and they lose nothing (they are invertible reshapes). Each
resolution also has residual 3x3-conv blocks, for spatial context.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from omni_img.fields import as_mapping, check_known_keys
from omni_img.models.quantizers import FiniteScalarQuantizer, VectorQuantizer


def space_to_depth(x_BxHxWxC, factor: int):
    b, h, w, c = x_BxHxWxC.shape
    x = x_BxHxWxC.reshape(b, h // factor, factor, w // factor, factor, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, factor * factor * c)


def depth_to_space(x_BxHxWxC, factor: int):
    b, h, w, c = x_BxHxWxC.shape
    out_c = c // (factor * factor)
    x = x_BxHxWxC.reshape(b, h, w, factor, factor, out_c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * factor, w * factor, out_c)


def _conv(features, dtype, name=None):
    return nn.Conv(
        features,
        (3, 3),
        padding="SAME",
        dtype=dtype,
        name=name,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")
        ),
    )


def _dense(features, dtype, name=None, zero=False):
    init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
    return nn.Dense(
        features,
        dtype=dtype,
        name=name,
        kernel_init=nn.with_logical_partitioning(init, ("conv_in", "conv_out")),
    )


class ResBlock(nn.Module):
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        y = nn.swish(nn.LayerNorm(dtype=self.dtype)(x_BxHxWxC))
        y = _conv(self.features, self.dtype)(y)
        y = nn.swish(nn.LayerNorm(dtype=self.dtype)(y))
        y = _conv(self.features, self.dtype)(y)
        return x_BxHxWxC + y


def _res_block(spec):
    """ResBlock, rematerialised when the spec asks: less activation memory, more compute."""
    return nn.remat(ResBlock) if spec.remat else ResBlock


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of the tokenizer; `patch_size` = pixels per token side (a power of 2)."""

    image_size: int = 64
    patch_size: int = 4
    widths: tuple[int, ...] = (32, 96)
    num_res_blocks: int = 1  # residual conv blocks per stage at the token resolution
    high_res_blocks: int = 1  # ... and per stage above it (costlier: more pixels)
    remat: bool = False  # recompute residual blocks' activations in the backward pass
    # A norm + swish between the decoder's upsampling layers: without it the dense +
    # depth-to-space steps compose into one linear map from a token's features to its
    # pixels, which keeps edges soft.
    upsample_activation: bool = False
    quantizer: str = "fsq"
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    codebook_size: int = 1024
    code_dim: int = 8
    commitment: float = 0.25
    entropy_weight: float = 0.1
    entropy_temperature: float = 0.01

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.patch_size))

    @property
    def num_codes(self) -> int:
        return math.prod(self.fsq_levels) if self.quantizer == "fsq" else self.codebook_size

    def blocks_at(self, stage: int) -> int:
        """Residual blocks at downsampling stage `stage` (the last is the token grid)."""
        return self.num_res_blocks if stage == self.num_stages - 1 else self.high_res_blocks


def tokenizer_config_from_mapping(model) -> TokenizerConfig:
    """A TokenizerConfig from a config's model block (a ConfigDict or a plain dict, e.g.
    read back from JSON); a key that is not a spec field is a UserError."""
    values = as_mapping(model, "model")
    check_known_keys(TokenizerConfig, values, "model")
    for key in ("widths", "fsq_levels"):
        if key in values:
            values[key] = tuple(values[key])
    return TokenizerConfig(**values)


class Encoder(nn.Module):
    spec: TokenizerConfig
    latent_dim: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWx3):
        x = x_BxHxWx3.astype(self.dtype)
        for stage in range(self.spec.num_stages):
            width = self.spec.widths[min(stage, len(self.spec.widths) - 1)]
            x = _dense(width, self.dtype)(space_to_depth(x, 2))
            for block in range(self.spec.blocks_at(stage)):
                name = f"res_{stage}_{block}"  # the same params with and without remat
                x = _res_block(self.spec)(width, self.dtype, name=name)(x)
        x = nn.swish(nn.LayerNorm(dtype=self.dtype)(x))
        return _dense(self.latent_dim, self.dtype)(x)


class Decoder(nn.Module):
    spec: TokenizerConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z_BxhxwxD):
        widths = [
            self.spec.widths[min(i, len(self.spec.widths) - 1)] for i in range(self.spec.num_stages)
        ]
        x = _dense(widths[-1], self.dtype)(z_BxhxwxD.astype(self.dtype))
        for stage in reversed(range(self.spec.num_stages)):
            for block in range(self.spec.blocks_at(stage)):
                name = f"res_{stage}_{block}"
                x = _res_block(self.spec)(widths[stage], self.dtype, name=name)(x)
            out_width = widths[stage - 1] if stage > 0 else widths[0]
            x = depth_to_space(_dense(4 * out_width, self.dtype)(x), 2)
            if self.spec.upsample_activation and stage > 0:
                x = nn.swish(nn.LayerNorm(dtype=self.dtype, name=f"up_norm_{stage}")(x))
        x = nn.swish(nn.LayerNorm(dtype=self.dtype)(x))
        return _conv(3, self.dtype, name="to_rgb")(x).astype(jnp.float32)


class Tokenizer(nn.Module):
    """Images in [-1, 1] (B, H, W, 3) <-> token ids (B, h, w)."""

    spec: TokenizerConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        if self.spec.quantizer == "fsq":
            self.quantizer = FiniteScalarQuantizer(tuple(self.spec.fsq_levels))
        else:
            self.quantizer = VectorQuantizer(
                self.spec.codebook_size,
                self.spec.code_dim,
                self.spec.commitment,
                self.spec.entropy_weight,
                self.spec.entropy_temperature,
            )
        self.encoder = Encoder(self.spec, self.quantizer.code_dim, self.dtype)
        self.decoder = Decoder(self.spec, self.dtype)

    def __call__(self, images_BxHxWx3):
        """Returns (reconstruction BxHxWx3, ids Bxhxw, quantizer aux loss)."""
        z = self.encoder(images_BxHxWx3)
        quantized, ids, aux = self.quantizer(z)
        return self.decoder(quantized), ids, aux

    def encode(self, images_BxHxWx3):
        """Token ids (B, h, w) int32."""
        _, ids, _ = self.quantizer(self.encoder(images_BxHxWx3))
        return ids.astype(jnp.int32)

    def decode(self, ids_Bxhxw):
        """Images in [-1, 1] (B, H, W, 3) from token ids."""
        return self.decoder(self.quantizer.lookup(ids_Bxhxw))


class PatchDiscriminator(nn.Module):
    """PatchGAN: a few strided convs, one real/fake logit per image patch.

    Optional adversarial loss of the tokenizer (off in the tiny config): sharper edges
    at the cost of a second network and a less stable loss.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images_BxHxWx3):
        x = images_BxHxWx3.astype(self.dtype)
        for width in self.widths:
            x = nn.Conv(
                width,
                (4, 4),
                strides=(2, 2),
                padding="SAME",
                dtype=self.dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")
                ),
            )(x)
            x = nn.leaky_relu(nn.LayerNorm(dtype=self.dtype)(x), 0.2)
        return _conv(1, self.dtype, name="logits")(x).astype(jnp.float32)


# ----------------------------------------------------------------------------- pixels, tokens
# Images travel as uint8 [0, 255]; the tokenizer works on float32 [-1, 1]. Every caller
# converts with these, so the two ranges meet in one formula (x / 127.5 - 1 one way,
# round((x + 1) * 127.5) clipped to [0, 255] the other).


def to_unit_range(images_uint8):
    """uint8 [0, 255] -> float32 [-1, 1]; traceable (batches travel to the device as uint8)."""
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def as_unit_range(images):
    """``to_unit_range`` for integer images; a float image is taken to be in [-1, 1]
    already and only cast to float32 (the rolling decoder's loss takes either)."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return to_unit_range(images)
    return images.astype(jnp.float32)


def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] -> uint8 [0, 255] on the host (rounded, clipped); same shape."""
    return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_uint8_traced(images):
    """``to_uint8`` inside a jitted function: the same formula in jnp, on the device."""
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def encode(model: Tokenizer, params, images_uint8):
    """uint8 images (B, H, W, 3) -> token ids (B, h, w): the VQ round trip's first half."""
    return model.apply({"params": params}, to_unit_range(images_uint8), method="encode")


def decode(model: Tokenizer, params, ids):
    """Token ids (B, h, w) -> images in [-1, 1] (unclipped) with the conv decoder."""
    return model.apply({"params": params}, ids, method="decode")
