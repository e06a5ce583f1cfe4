"""Trainer of the rolling band-wise diffusion decoder: (tokens, text embeddings) -> pixels.

    omni-img train --config experiments/rolling_tiny.py --workdir runs/rolling_tiny \
        --config.data.tokenized_dir=runs/tokens --config.generator_workdir=runs/generator_tiny

Trains on (image, its token grid, E) where E comes from the trained generator's
multimodal encoder, kept frozen. Read top to bottom: Mesh -> Data -> Model ->
Shard/Step/Restore/Loop -> Eval. The stage itself (data, config, loss, train step,
loading a workdir): omni_img.stages.rolling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from omni_img.data.tokenized import TokenizedSource
from omni_img.errors import UserError
from omni_img.evals.images import psnr, save_grid
from omni_img.models import tokenizer as tokenizer_model
from omni_img.models.tokenizer import to_uint8
from omni_img.sampling import rolling as rolling_sampling
from omni_img.sharding import mesh_context
from omni_img.stages import generator as generator_stage
from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.stages.rolling import (
    ImagesWithTokens,
    decoder_config,
    embedding_fn,
    rolling_example,
    text_embeddings,
    train_step_parts,
)
from omni_img.training.data import batch_shardings, make_train_iterator
from omni_img.training.fit import finish_report, fit, stopped_report
from omni_img.training.metrics import MetricsWriter
from omni_img.training.preamble import start_run
from omni_img.training.sources import open_split, open_tokenized
from omni_img.training.state import to_host


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train the rolling decoder; returns the final evaluation report."""
    # ---------------------------------------------------------------- Mesh
    mesh, rules, workdir_path = start_run(config, workdir)

    # ---------------------------------------------------------------- Data
    _, generator_model, generator_params, text_tokenizer = generator_stage.load_workdir(
        config.generator_workdir
    )
    tokens = open_tokenized(config.data, config.data.train_split)
    source = ImagesWithTokens(open_split(config.data, config.data.train_split), tokens)
    transform = functools.partial(
        rolling_example, tokenizer=text_tokenizer, model_cfg=generator_model.cfg
    )
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


def evaluate(cfg, params, source, transform, generator, config, workdir) -> dict:
    """PSNR against the ground truth of the rolling decoder (both modes) and of the
    tokenizer's conv decoder, on the same ground-truth tokens; a comparison grid; and,
    with `config.eval.rfid_images` > 0, the rFID of the conv and rolling decoders."""
    generator_model, generator_params = generator
    _, conv_model, conv_params = tokenizer_stage.load_workdir(config.tokenizer_workdir)
    conv_decode = jax.jit(lambda p, ids: tokenizer_model.decode(conv_model, p, ids))
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
    rfid_count = min(int(config.eval.rfid_images), len(source))
    if rfid_count > 0:
        report["rfid"] = decoder_rfid(*decode(rfid_count, ("conv", "rolling")))
    return report


def fetch_fid_weights() -> None:
    """Cache the FID network before a run that reports rFID. Offline, the run goes on
    and `decoder_rfid` records why there is no rFID."""
    from omni_img.evals.metrics import weights

    try:
        weights.fetch(weights.FID_TORCHSCRIPT)
    except UserError as error:
        print(f"no FID weights, so no rFID: {error}", flush=True)


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
