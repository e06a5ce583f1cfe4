"""Quantizers of the VQ tokenizer: l2-normalised VQ with a low-dimensional lookup, and FSQ.

Letters in tensor names: B batch, H/W token-grid height/width, D latent dim, K codebook size.

* `VectorQuantizer` (as in ViT-VQGAN / LlamaGen): the encoder output is projected to a
  small `code_dim` and l2-normalised, and so is the codebook, so the lookup is a cosine
  similarity. Low-dimensional normalised codes keep most of the codebook in use; an
  entropy penalty (confident per position, diverse across the batch) keeps it that way.
* `FiniteScalarQuantizer` (FSQ): each latent channel is bounded and rounded to one of
  `levels[i]` values; the code is the mixed-radix number of the rounded channels. No
  codebook, no auxiliary loss, and usage stays high by construction.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _l2_normalize(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _entropy(probs_xK, axis=-1):
    return -jnp.sum(probs_xK * jnp.log(probs_xK + 1e-9), axis=axis)


class VectorQuantizer(nn.Module):
    """Cosine-similarity VQ over `codebook_size` codes of dimension `code_dim`."""

    codebook_size: int
    code_dim: int
    commitment: float = 0.25
    entropy_weight: float = 0.1
    entropy_temperature: float = 0.01

    @property
    def num_codes(self) -> int:
        return self.codebook_size

    def setup(self):
        self.codebook_KxD = self.param(
            "codebook",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("codebook", "norm")),
            (self.codebook_size, self.code_dim),
        )

    def _similarity(self, z_BxHxWxD):
        codebook = _l2_normalize(self.codebook_KxD.astype(jnp.float32))
        z = _l2_normalize(z_BxHxWxD.astype(jnp.float32))
        return z, codebook, jnp.einsum("bhwd,kd->bhwk", z, codebook)

    def __call__(self, z_BxHxWxD):
        """Returns (quantised latents, straight-through; ids BxHxW; aux loss)."""
        z, codebook, sim_BxHxWxK = self._similarity(z_BxHxWxD)
        ids_BxHxW = jnp.argmax(sim_BxHxWxK, axis=-1)
        q = codebook[ids_BxHxW]
        codebook_loss = jnp.mean((jax.lax.stop_gradient(z) - q) ** 2)
        commit_loss = jnp.mean((z - jax.lax.stop_gradient(q)) ** 2)
        probs = jax.nn.softmax(sim_BxHxWxK / self.entropy_temperature, axis=-1)
        per_position = jnp.mean(_entropy(probs))
        batch_usage = _entropy(jnp.mean(probs.reshape(-1, self.codebook_size), axis=0))
        aux = codebook_loss + self.commitment * commit_loss
        aux = aux + self.entropy_weight * (per_position - batch_usage)
        q_st = z + jax.lax.stop_gradient(q - z)
        return q_st, ids_BxHxW, aux

    def lookup(self, ids_BxHxW):
        """Code vectors of the given ids (for decoding token grids)."""
        return _l2_normalize(self.codebook_KxD.astype(jnp.float32))[ids_BxHxW]


class FiniteScalarQuantizer(nn.Module):
    """FSQ with the given per-channel `levels`; `code_dim == len(levels)`."""

    levels: tuple[int, ...] = (8, 5, 5, 5)

    @property
    def num_codes(self) -> int:
        return math.prod(self.levels)

    @property
    def code_dim(self) -> int:
        return len(self.levels)

    def _bound(self, z):
        levels = jnp.asarray(self.levels, jnp.float32)
        half = (levels - 1) * (1 - 1e-3) / 2
        # Even level counts need a half-step shift so rounding lands on `levels` values.
        offset = jnp.where(levels % 2 == 0, 0.5, 0.0)
        shift = jnp.arctanh(offset / half)
        return jnp.tanh(z + shift) * half - offset

    def __call__(self, z_BxHxWxD):
        z = self._bound(z_BxHxWxD.astype(jnp.float32))
        rounded = z + jax.lax.stop_gradient(jnp.round(z) - z)
        ids = self._codes_to_ids(jnp.round(z))
        half_width = np.asarray(self.levels) // 2
        return rounded / half_width, ids, jnp.zeros((), jnp.float32)

    def _codes_to_ids(self, rounded_BxHxWxD):
        levels = np.asarray(self.levels)
        digits = (rounded_BxHxWxD + levels // 2).astype(jnp.int32)
        radix = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
        return jnp.sum(digits * radix, axis=-1)

    def lookup(self, ids_BxHxW):
        levels = np.asarray(self.levels)
        radix = np.concatenate([[1], np.cumprod(levels[:-1])])
        digits = (ids_BxHxW[..., None] // radix) % levels
        return (digits - levels // 2).astype(jnp.float32) / (levels // 2)


def code_statistics(ids, num_codes: int):
    """(fraction of codes used, perplexity) of a batch of ids."""
    counts = jnp.bincount(ids.reshape(-1), length=num_codes)
    probs = counts / jnp.maximum(counts.sum(), 1)
    usage = jnp.mean(counts > 0)
    perplexity = jnp.exp(_entropy(probs))
    return usage, perplexity
