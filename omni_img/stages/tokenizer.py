"""The VQ tokenizer stage: its model, loss, train step and loading a trained workdir.

Training (``omni_img.trainers.tokenizer``) and everything that reads a trained tokenizer
share these definitions.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import load_saved_config
from omni_img.models.quantizers import code_statistics
from omni_img.models.tokenizer import (
    PatchDiscriminator,
    Tokenizer,
    to_unit_range,
    tokenizer_config_from_mapping,
)
from omni_img.sharding import make_mesh
from omni_img.training.fit import StageStep, restore_latest


def tokenizer_loss(params, batch, rng, *, model: Tokenizer, loss_weights):
    """Reconstruction (L1 + L2), the quantizer's loss and, when `loss_weights.adversarial`
    is > 0, a PatchGAN hinge loss. Returns (loss, metrics).

    With a discriminator, `params` is {"tokenizer": ..., "discriminator": ...} and one
    optimizer trains both: the generator term sees the discriminator's params through
    stop_gradient, and the discriminator term sees the reconstruction through
    stop_gradient, so each network gets only its own objective's gradient.
    """
    del rng  # the tokenizer's loss is deterministic
    adversarial = loss_weights.adversarial
    tokenizer_params = params["tokenizer"] if adversarial > 0 else params
    images = to_unit_range(batch["image"])
    reconstruction, ids, quantizer_loss = model.apply({"params": tokenizer_params}, images)
    l1 = jnp.mean(jnp.abs(reconstruction - images))
    l2 = jnp.mean(jnp.square(reconstruction - images))
    loss = loss_weights.l1 * l1 + loss_weights.l2 * l2 + quantizer_loss
    extra = {}
    if adversarial > 0:
        generator_term, discriminator_term = patchgan_losses(
            params["discriminator"], images, reconstruction
        )
        loss = loss + adversarial * generator_term + discriminator_term
        extra = {"adversarial_g": generator_term, "adversarial_d": discriminator_term}
    usage, perplexity = code_statistics(ids, model.spec.num_codes)
    # PSNR of the batch on the [0, 1] scale: the images span 2 units in [-1, 1].
    psnr_db = -10.0 * jnp.log10(l2 / 4.0)
    metrics = {
        # Sum of the batch's pixels: a fingerprint of which examples were read, so a
        # resumed run's metrics show it continued on the exact next batch.
        "input_checksum": jnp.sum(batch["image"].astype(jnp.int32)).astype(jnp.float32),
        "l1": l1,
        "l2": l2,
        "quantizer_loss": quantizer_loss,
        "psnr": psnr_db,
        "batch_code_usage": usage,
        "batch_perplexity": perplexity,
        **extra,
    }
    return loss, metrics


def patchgan_losses(discriminator_params, images, reconstruction):
    """(generator hinge term, discriminator hinge term) of a PatchGAN."""
    disc = PatchDiscriminator()
    frozen = jax.lax.stop_gradient(discriminator_params)
    generator_term = -jnp.mean(disc.apply({"params": frozen}, reconstruction))
    real = disc.apply({"params": discriminator_params}, images)
    fake = disc.apply({"params": discriminator_params}, jax.lax.stop_gradient(reconstruction))
    discriminator_term = jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
    return generator_term, discriminator_term


def image_example(record) -> dict[str, np.ndarray]:
    """A record -> the train batch's arrays: its image, uint8 as stored."""
    return {"image": np.asarray(record["image"], np.uint8)}


def build_model(config: ml_collections.ConfigDict) -> Tokenizer:
    """The tokenizer of a config, in its compute dtype and with its remat setting."""
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
    spec = dataclasses.replace(tokenizer_config_from_mapping(config.model), remat=config.remat)
    return Tokenizer(spec, dtype=dtype)


def init_fn(model: Tokenizer, config):
    """rng -> initial params: the tokenizer's, and the discriminator's when the loss
    has an adversarial term (then {"tokenizer": ..., "discriminator": ...})."""
    size = config.model.image_size
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    if config.loss.adversarial <= 0:
        return lambda rng: model.init(rng, dummy)["params"]

    def init_both(rng):
        tokenizer_rng, discriminator_rng = jax.random.split(rng)
        return {
            "tokenizer": model.init(tokenizer_rng, dummy)["params"],
            "discriminator": PatchDiscriminator().init(discriminator_rng, dummy)["params"],
        }

    return init_both


def train_step_parts(config: ml_collections.ConfigDict) -> StageStep:
    """The tokenizer's train step (initialiser, loss, batch shapes) from its config."""
    model = build_model(config)
    size = config.model.image_size
    return StageStep(
        init_params=init_fn(model, config),
        loss_fn=functools.partial(tokenizer_loss, model=model, loss_weights=config.loss),
        example_batch={"image": np.zeros((config.batch_size, size, size, 3), np.uint8)},
    )


def tokenizer_params_of(config, params):
    """The tokenizer's own params (without the discriminator's, if any)."""
    return params["tokenizer"] if config.loss.adversarial > 0 else params


def restore_state(config: ml_collections.ConfigDict, workdir: str):
    """The latest checkpoint of `workdir`, laid out on this process's devices and mesh."""
    model = build_model(config)
    mesh = make_mesh(config.mesh)
    return restore_latest(config, workdir, init_fn(model, config), mesh, rules_from_config(config))


def load_workdir(workdir: str):
    """(config, model, EMA params on host) of a trained tokenizer workdir."""
    config = load_saved_config(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    state = restore_state(config, workdir)
    params = tokenizer_params_of(config, state.ema_params)
    return config, build_model(config), jax.device_get(params)


def restore_params(config: ml_collections.ConfigDict, workdir: str):
    """Params (not EMA) of the latest checkpoint of `workdir`."""
    return restore_state(config, workdir).params
