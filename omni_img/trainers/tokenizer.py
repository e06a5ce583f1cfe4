"""Trainer of the VQ tokenizer stage: images -> tokens -> images.

    omni-img train --config experiments/tokenizer_tiny.py --workdir runs/tokenizer_tiny

Read top to bottom: Mesh -> Data -> Model -> Shard -> Step -> Restore -> Loop -> Eval.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from omni_img.config import validate_config
from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import load_saved_config, save_config
from omni_img.data import reading
from omni_img.evals.generation import judge_records
from omni_img.evals.images import psnr, save_grid
from omni_img.models.quantizers import code_statistics
from omni_img.models.tokenizer import PatchDiscriminator, Tokenizer, tokenizer_spec_from_config
from omni_img.sharding import make_mesh
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import StageStep, finish_report, fit, restore_latest, stopped_report
from omni_img.training.metrics import MetricsWriter
from omni_img.training.sources import open_split
from omni_img.training.state import to_host


def image_to_float(images_uint8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1] (done on device: batches travel as uint8)."""
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def tokenizer_loss(params, batch, rng, *, model: Tokenizer, loss_weights):
    """Reconstruction (L1 + L2), the quantizer's loss and, when `loss_weights.adversarial`
    is > 0, a PatchGAN hinge loss. Returns (loss, metrics).

    With a discriminator, `params` is {"tokenizer": ..., "discriminator": ...} and one
    optimizer trains both: the generator term sees the discriminator's params through
    stop_gradient, and the discriminator term sees the reconstruction through
    stop_gradient, so each network gets only its own objective's gradient.
    """
    del rng  # the tokenizer's loss is deterministic
    adversarial = loss_weights.get("adversarial", 0.0)
    tokenizer_params = params["tokenizer"] if adversarial > 0 else params
    images = image_to_float(batch["image"])
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
    return {"image": np.asarray(record["image"], np.uint8)}


def build_model(config: ml_collections.ConfigDict) -> Tokenizer:
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
    spec = dataclasses.replace(tokenizer_spec_from_config(config.model), remat=config.remat)
    return Tokenizer(spec, dtype=dtype)


def _init_fn(model: Tokenizer, config):
    size = config.model.image_size
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    if config.loss.get("adversarial", 0.0) <= 0:
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
        init_params=_init_fn(model, config),
        loss_fn=functools.partial(tokenizer_loss, model=model, loss_weights=config.loss),
        example_batch={"image": np.zeros((config.batch_size, size, size, 3), np.uint8)},
    )


def tokenizer_params_of(config, params):
    """The tokenizer's own params (without the discriminator's, if any)."""
    return params["tokenizer"] if config.loss.get("adversarial", 0.0) > 0 else params


def restore_state(config: ml_collections.ConfigDict, workdir: str):
    """The latest checkpoint of `workdir`, laid out on this process's devices and mesh."""
    model = build_model(config)
    mesh = make_mesh(config.mesh)
    return restore_latest(config, workdir, _init_fn(model, config), mesh, rules_from_config(config))


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


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    train_source=None,
    eval_source=None,
) -> dict:
    """Train the tokenizer; returns the final evaluation report (also written to workdir)."""
    # ---------------------------------------------------------------- Mesh
    validate_config(config, jax.device_count(), jax.process_count(), workdir)
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config)
    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir_path)

    # ---------------------------------------------------------------- Data
    if train_source is None:
        train_source = open_split(config.data, config.data.train_split)
    data_iterator = make_train_iterator(
        train_source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        transform=image_example,
        worker_count=config.data.worker_count,
    )

    # ---------------------------------------------------------------- Model
    model = build_model(config)

    # ---------------------------------------------------------------- Shard, Step, Restore, Loop
    writer = MetricsWriter(workdir_path)
    result = fit(
        config,
        workdir_path,
        mesh=mesh,
        rules=rules,
        stage=train_step_parts(config),
        data_iterator=data_iterator,
        writer=writer,
        description="tokenizer",
    )

    # ---------------------------------------------------------------- Eval
    if (stopped := stopped_report(result, writer)) is not None:
        return stopped
    if eval_source is None:
        eval_source = open_split(config.data, config.data.eval_split)
    params = tokenizer_params_of(config, result.state.ema_params)
    report = evaluate(model, params, eval_source, config, workdir_path)
    return finish_report(report, result, writer, workdir_path / "tokenizer_eval.json")


def reconstruct_fn(model: Tokenizer):
    """jit(params, images uint8) -> (reconstruction uint8, ids)."""

    @jax.jit
    def reconstruct(params, images_uint8):
        reconstruction, ids, _ = model.apply({"params": params}, image_to_float(images_uint8))
        uint8 = jnp.clip(jnp.round((reconstruction + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
        return uint8, ids

    return reconstruct


def code_usage(ids, num_codes: int) -> tuple[float, float]:
    """(share of the codes used at least once, perplexity) of an array of token ids."""
    counts = np.bincount(np.asarray(ids).reshape(-1), minlength=num_codes)
    probs = counts[counts > 0] / counts.sum()
    return float(np.mean(counts > 0)), float(np.exp(-np.sum(probs * np.log(probs))))


def evaluate(model, params, source, config, workdir: pathlib.Path) -> dict:
    """PSNR per task and the judge on `config.eval.num_examples` records; codebook usage
    and perplexity over `config.eval.usage_examples` (0: the whole split; usage counted
    on a small sample understates it); a grid PNG of originals (odd rows) over
    reconstructions (even rows)."""
    params = to_host(params)
    reconstruct = reconstruct_fn(model)
    count = min(int(config.eval.num_examples), len(source))
    batch_size = int(config.eval.batch_size)
    originals, reconstructions, all_ids, records = [], [], [], []
    for start in range(0, count, batch_size):
        batch = [source[i] for i in range(start, min(start + batch_size, count))]
        images = np.stack([np.asarray(r["image"], np.uint8) for r in batch])
        recon, ids = jax.device_get(reconstruct(params, images))
        originals.append(images)
        reconstructions.append(recon)
        all_ids.append(ids)
        records.extend(batch)
    tasks = [_task_name(r) for r in records]
    originals = np.concatenate(originals)
    reconstructions = np.concatenate(reconstructions)
    per_image = psnr(originals, reconstructions)
    usage_count = int(config.eval.get("usage_examples", 0)) or len(source)
    encode = jax.jit(lambda p, x: model.apply({"params": p}, image_to_float(x), method="encode"))
    for start in range(count, min(usage_count, len(source)), batch_size):
        rows = range(start, min(start + batch_size, usage_count, len(source)))
        images = np.stack([np.asarray(source[i]["image"], np.uint8) for i in rows])
        all_ids.append(np.asarray(encode(params, images)))
    usage, perplexity = code_usage(np.concatenate(all_ids), model.spec.num_codes)
    report = {
        "eval_examples": int(count),
        "usage_examples": int(sum(len(i) for i in all_ids)),
        "psnr": float(np.mean(per_image)),
        "code_usage": usage,
        "perplexity": perplexity,
    }
    tasks_array = np.asarray(tasks)
    for task in sorted(set(tasks)):
        report[f"psnr_{task}"] = float(np.mean(per_image[tasks_array == task]))
    if all("spec" in r for r in records):  # omni_shapes: judge the reconstructions
        summary, _ = judge_records(reconstructions, records)
        report["judge"] = summary
    pairs = []
    for start in range(0, min(count, 32), 8):
        pairs.extend([originals[start : start + 8], reconstructions[start : start + 8]])
    grid_path = workdir / "tokenizer_reconstructions.png"
    if jax.process_index() == 0:
        save_grid(np.concatenate(pairs), grid_path, columns=8)
    report["grid"] = str(grid_path)
    return report


def _task_name(record) -> str:
    return reading.text(record.get("task", "image"))
