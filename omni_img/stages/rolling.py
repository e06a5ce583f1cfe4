"""The rolling band-wise diffusion decoder stage: its data, config, loss, train step and
loading a trained workdir.

The decoder trains on (image, its token grid, E), E from the trained generator's
multimodal encoder, kept frozen. Training (``omni_img.trainers.rolling``) and everything
that reads a trained decoder share these definitions.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import load_saved_config
from omni_img.data.tokenized import TokenizedSource
from omni_img.errors import UserError
from omni_img.models.bands import RollingDecoderConfig, rolling_decoder_config
from omni_img.models.generator import CONDITION_KEYS
from omni_img.models.rolling_decoder import init_rolling_decoder, rolling_loss
from omni_img.models.tokenizer import tokenizer_config_from_mapping
from omni_img.sharding import make_mesh, replicated
from omni_img.stages import generator as generator_stage
from omni_img.stages.generator import conditioning_example
from omni_img.training.fit import StageStep, restore_latest


class ImagesWithTokens:
    """Record i = the dataset's image i + its tokenized record i (same split, same order)."""

    def __init__(self, images, tokens: TokenizedSource):
        if len(images) != len(tokens):
            raise UserError(
                f"tokenized split has {len(tokens)} records but the dataset split has "
                f"{len(images)}: tokenize the same dataset build again"
            )
        self.images, self.tokens = images, tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict:
        return {**self.tokens[index], "image": self.images[index]["image"]}


def decoder_config(
    config, metadata: dict, text_dim: int, base_tokenizer=None
) -> RollingDecoderConfig:
    """The model's config: `config.model` plus the token space, E's width and, with
    `config.model.conv_base`, the spec of the tokenizer to refine (`base_tokenizer`, by
    default read from `config.tokenizer_workdir`)."""
    values = config.model.to_dict()
    conv_base = values.pop("conv_base", False)
    if conv_base and base_tokenizer is None:
        base_tokenizer = base_tokenizer_spec(config.tokenizer_workdir)
    values.update(
        token_rows=metadata["grid"][0],
        token_cols=metadata["grid"][1],
        codebook_size=metadata["num_codes"],
        text_dim=text_dim,
        dtype=config.compute_dtype,
        base_tokenizer=base_tokenizer if conv_base else None,
    )
    return rolling_decoder_config(values)


def base_tokenizer_spec(tokenizer_workdir: str):
    """The tokenizer spec (without remat: the base never runs backwards) of a workdir."""
    tokenizer_config = load_saved_config(tokenizer_workdir)
    return dataclasses.replace(tokenizer_config_from_mapping(tokenizer_config.model), remat=False)


def text_embeddings(generator_model, generator_params, batch):
    """E (B, S, D) and its mask from the frozen generator encoder."""
    # The prompt's keys only: E has never been conditioned on a class id.
    cond = {key: batch[key] for key in CONDITION_KEYS if key in batch and key != "class_id"}
    e, mask = generator_model.apply({"params": generator_params}, cond, method="encode")
    return jax.lax.stop_gradient(e), mask


def rolling_stage_loss(params, batch, rng, *, cfg):
    """`rolling_loss` on a batch of image, target_tokens, text_emb and text_mask."""
    inputs = {"image": batch["image"], "tokens": batch["target_tokens"],
              "text_emb": batch["text_emb"], "text_mask": batch["text_mask"]}  # fmt: skip
    return rolling_loss(params, inputs, rng, cfg)


def train_step_parts(
    config, tokens_metadata: dict, generator_cfg, base_params=None, base_tokenizer=None
) -> StageStep:
    """The rolling decoder's train step (initialiser, loss, batch shapes) from its config,
    the token space and the generator's config (for E's shape). `base_params`: the
    tokenizer's params, copied into the conv base at initialisation; `base_tokenizer`:
    its spec, when there is no tokenizer workdir to read it from (benchmarks)."""
    length, width = generator_cfg.encoder_length, generator_cfg.dim
    cfg = decoder_config(config, tokens_metadata, width, base_tokenizer=base_tokenizer)
    b, h, w = config.batch_size, cfg.token_rows, cfg.token_cols
    example_batch = {
        "image": np.zeros((b, cfg.image_height, cfg.image_width, 3), np.uint8),
        "target_tokens": np.zeros((b, h, w), np.int32),
        "text_emb": np.zeros((b, length, width), jnp.dtype(generator_cfg.dtype)),
        "text_mask": np.zeros((b, length), bool),
    }
    return StageStep(
        init_params=functools.partial(init_decoder, cfg, base_params=base_params),
        loss_fn=functools.partial(rolling_stage_loss, cfg=cfg),
        example_batch=example_batch,
    )


def embedding_fn(generator_model, generator_params, mesh, out_shardings):
    """jit(global batch) -> the train step's batch: the prompt keys replaced by E."""
    params = jax.device_put(generator_params, replicated(mesh))

    @functools.partial(jax.jit, out_shardings=out_shardings)
    def embed(params, batch):
        e, mask = text_embeddings(generator_model, params, batch)
        return {"image": batch["image"], "target_tokens": batch["target_tokens"],
                "text_emb": e, "text_mask": mask}  # fmt: skip

    return lambda batch: embed(params, batch)


def rolling_example(record, *, tokenizer, model_cfg) -> dict[str, np.ndarray]:
    """An image-and-tokens record -> the generator's batch arrays plus its uint8 image."""
    example = conditioning_example(record, tokenizer=tokenizer, model_cfg=model_cfg)
    example["image"] = np.asarray(record["image"], np.uint8)
    return example


def init_decoder(cfg: RollingDecoderConfig, rng, base_params=None):
    """The decoder's initial variables; with `base_params`, its conv base is theirs."""
    # Parameter shapes do not depend on the text length; 8 positions suffice to trace.
    variables = init_rolling_decoder(cfg, rng, batch=1, text_len=8)
    if cfg.base_tokenizer is None or base_params is None:
        return variables
    # The conv base starts as (and, frozen, stays) the trained tokenizer's decoder.
    base = dict(variables["params"]["base"])
    for name in base:
        base[name] = jax.tree.map(
            lambda box, value: (
                box.replace_boxed(jnp.asarray(value, box.value.dtype))
                if isinstance(box, nn.Partitioned)
                else jnp.asarray(value, box.dtype)
            ),
            base[name],
            base_params[name],
            is_leaf=lambda x: isinstance(x, nn.Partitioned),
        )
    return {**variables, "params": {**variables["params"], "base": base}}


def load_workdir(workdir: str):
    """(config, RollingDecoderConfig, EMA params on host) of a trained rolling decoder."""
    config = load_saved_config(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    _, generator_model, _, _ = generator_stage.load_workdir(config.generator_workdir)
    tokens = TokenizedSource(config.data.tokenized_dir, config.data.eval_split)
    cfg, params = restore_decoder(config, workdir, tokens.metadata, generator_model.cfg.dim)
    return config, cfg, params


def restore_decoder(config, workdir: str, metadata: dict, text_dim: int):
    """(RollingDecoderConfig, EMA params on host) of the latest checkpoint of `workdir`,
    for the token space of `metadata` and E's width `text_dim`."""
    cfg = decoder_config(config, metadata, text_dim)
    init_params = functools.partial(init_decoder, cfg)
    mesh = make_mesh(config.mesh)
    state = restore_latest(config, workdir, init_params, mesh, rules_from_config(config))
    return cfg, jax.device_get(state.ema_params)
