"""Trainer of the rolling band-wise diffusion decoder: (tokens, text embeddings) -> pixels.

    omni-img train --config experiments/rolling_tiny.py --workdir runs/rolling_tiny \
        --config.data.tokenized_dir=runs/tokens --config.generator_workdir=runs/generator_tiny

Trains on (image, its token grid, E) where E comes from the trained generator's
multimodal encoder, kept frozen. Read top to bottom: Mesh -> Data -> Model ->
Shard/Step/Restore/Loop -> Eval.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from omni_img.config import validate_config
from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import load_saved_config, save_config
from omni_img.data.tokenized import TokenizedSource
from omni_img.errors import UserError
from omni_img.evals.images import psnr, save_grid, to_uint8
from omni_img.models.bands import RollingDecoderConfig, rolling_decoder_config
from omni_img.models.rolling_decoder import init_rolling_decoder, rolling_loss
from omni_img.models.tokenizer import tokenizer_spec_from_config
from omni_img.sampling import rolling as rolling_sampling
from omni_img.sharding import make_mesh, mesh_context, replicated
from omni_img.trainers import generator as generator_stage
from omni_img.trainers import tokenizer as tokenizer_stage
from omni_img.training.data import batch_shardings, make_train_iterator
from omni_img.training.fit import StageStep, finish_report, fit, restore_latest, stopped_report
from omni_img.training.metrics import MetricsWriter
from omni_img.training.sources import open_split, open_tokenized
from omni_img.training.state import to_host

CONDITION_KEYS = ("text_ids", "text_mask", "source_tokens", "has_source", "history_ids",
                  "history_mask")  # fmt: skip


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
    return dataclasses.replace(tokenizer_spec_from_config(tokenizer_config.model), remat=False)


def text_embeddings(generator_model, generator_params, batch):
    """E (B, S, D) and its mask from the frozen generator encoder."""
    cond = {key: batch[key] for key in CONDITION_KEYS if key in batch}
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
        init_params=functools.partial(_init, cfg, base_params=base_params),
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


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train the rolling decoder; returns the final evaluation report."""
    # ---------------------------------------------------------------- Mesh
    validate_config(config, jax.device_count(), jax.process_count(), workdir)
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config)
    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir_path)

    # ---------------------------------------------------------------- Data
    _, generator_model, generator_params, text_tokenizer = generator_stage.load_workdir(
        config.generator_workdir
    )
    tokens = open_tokenized(config.data, config.data.train_split)
    source = ImagesWithTokens(open_split(config.data, config.data.train_split), tokens)
    transform = functools.partial(_example, tokenizer=text_tokenizer, model_cfg=generator_model.cfg)
    data_iterator = make_train_iterator(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        transform=transform,
        worker_count=config.data.worker_count,
    )

    # ---------------------------------------------------------------- Model
    cfg = decoder_config(config, tokens.metadata, generator_model.cfg.dim)
    _, _, tokenizer_params = tokenizer_stage.load_workdir(config.tokenizer_workdir)
    stage = train_step_parts(config, tokens.metadata, generator_model.cfg, tokenizer_params)
    with mesh_context(mesh, rules):
        prepare = embedding_fn(
            generator_model, generator_params, mesh, batch_shardings(stage.example_batch, mesh)
        )

    # ---------------------------------------------------------------- Shard, Step, Restore, Loop
    writer = MetricsWriter(workdir_path)
    result = fit(
        config,
        workdir_path,
        mesh=mesh,
        rules=rules,
        stage=stage,
        data_iterator=data_iterator,
        writer=writer,
        description="rolling decoder",
        prepare_batch=prepare,
    )

    # ---------------------------------------------------------------- Eval
    if (stopped := stopped_report(result, writer)) is not None:
        return stopped
    eval_tokens = TokenizedSource(config.data.tokenized_dir, config.data.eval_split)
    eval_source = ImagesWithTokens(open_split(config.data, config.data.eval_split), eval_tokens)
    report = evaluate(
        cfg, to_host(result.state.ema_params), eval_source, transform,
        (generator_model, generator_params), config, workdir_path,
    )  # fmt: skip
    return finish_report(report, result, writer, workdir_path / "rolling_eval.json")


def _example(record, *, tokenizer, model_cfg) -> dict[str, np.ndarray]:
    example = generator_stage.conditioning_example(record, tokenizer=tokenizer, model_cfg=model_cfg)
    example["image"] = np.asarray(record["image"], np.uint8)
    return example


def _init(cfg: RollingDecoderConfig, rng, base_params=None):
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


def evaluate(cfg, params, source, transform, generator, config, workdir) -> dict:
    """PSNR against the ground truth of the rolling decoder (both modes) and of the
    tokenizer's conv decoder, on the same ground-truth tokens; a comparison grid; and,
    with `config.eval.rfid_images` > 0, the rFID of the conv and rolling decoders."""
    generator_model, generator_params = generator
    _, conv_model, conv_params = tokenizer_stage.load_workdir(config.tokenizer_workdir)
    conv_decode = jax.jit(lambda p, ids: conv_model.apply({"params": p}, ids, method="decode"))
    embed = jax.jit(lambda b: text_embeddings(generator_model, generator_params, b))
    rng = jax.random.PRNGKey(config.seed)

    def decode(count: int, modes: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Ground truth and each mode's decoding of the first `count` records' tokens."""
        truth, decoded = [], {mode: [] for mode in modes}
        batch_size = int(config.eval.batch_size)
        for start in range(0, count, batch_size):
            rows = [transform(source[i]) for i in range(start, min(start + batch_size, count))]
            batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
            e, mask = embed({k: v for k, v in batch.items() if k != "image"})
            truth.append(batch["image"])
            ids = jnp.asarray(batch["target_tokens"])
            for mode in modes:
                if mode == "conv":
                    image = conv_decode(conv_params, ids)
                else:
                    image, _ = rolling_sampling.sample(params, cfg, ids, e, mask, rng, mode=mode)
                decoded[mode].append(to_uint8(np.asarray(image)))
        return np.concatenate(truth), {m: np.concatenate(v) for m, v in decoded.items()}

    count = min(int(config.eval.num_examples), len(source))
    truth, decoded = decode(count, ("conv", "sequential", "rolling"))
    report: dict = {"eval_examples": int(count)}
    for name, images in decoded.items():
        report[f"psnr_{name}"] = float(np.mean(psnr(truth, images)))
    report["rolling_minus_conv_db"] = report["psnr_rolling"] - report["psnr_conv"]
    shown = min(count, 8)
    rows = [truth[:shown]] + [images[:shown] for images in decoded.values()]
    grid_path = workdir / "rolling_vs_conv.png"
    if jax.process_index() == 0:
        save_grid(np.concatenate(rows), grid_path, columns=shown)
    report["grid"] = str(grid_path)
    rfid_count = min(int(config.eval.get("rfid_images", 0)), len(source))
    if rfid_count > 0:
        report["rfid"] = decoder_rfid(*decode(rfid_count, ("conv", "rolling")))
    return report


def decoder_rfid(truth: np.ndarray, decoded: dict[str, np.ndarray]) -> dict:
    """FID (real Inception weights, StyleGAN3's preprocessing) of each decoder's images
    against the ground truth they decode; {"skipped": why} without the weights."""
    from omni_img.evals.metrics import fid, weights

    try:
        params = weights.load_fid_params()
    except UserError as error:
        return {"skipped": str(error)}
    extractor = fid.FeatureExtractor(params, "stylegan3", 50)
    reference = fid.compute_stats(truth, extractor)[:2]
    report = {"images": len(truth), "preprocessing": "stylegan3"}
    for name, images in decoded.items():
        report[name] = fid.frechet_distance(*fid.compute_stats(images, extractor)[:2], *reference)
    return report


def load_workdir(workdir: str):
    """(config, RollingDecoderConfig, EMA params on host) of a trained rolling decoder."""
    config = load_saved_config(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    _, generator_model, generator_params, _ = generator_stage.load_workdir(config.generator_workdir)
    tokens = TokenizedSource(config.data.tokenized_dir, config.data.eval_split)
    cfg = decoder_config(config, tokens.metadata, generator_model.cfg.dim)
    mesh = make_mesh(config.mesh)
    init_params = functools.partial(_init, cfg)
    state = restore_latest(config, workdir, init_params, mesh, rules_from_config(config))
    return config, cfg, jax.device_get(state.ema_params)
