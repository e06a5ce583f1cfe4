"""Trainer of the VQ tokenizer stage: images -> tokens -> images.

    omni-img train --config experiments/tokenizer_tiny.py --workdir runs/tokenizer_tiny

Read top to bottom: Mesh -> Data -> Model -> Shard -> Step -> Restore -> Loop -> Eval.
The stage itself (model, loss, train step, loading a workdir): omni_img.stages.tokenizer.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections
import numpy as np

from omni_img.data import reading
from omni_img.evals.generation import judge_records
from omni_img.evals.images import psnr, save_grid
from omni_img.models import tokenizer as tokenizer_model
from omni_img.models.tokenizer import Tokenizer
from omni_img.stages.tokenizer import (
    build_model,
    image_example,
    tokenizer_params_of,
    train_step_parts,
)
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import finish_report, fit, stopped_report
from omni_img.training.metrics import MetricsWriter
from omni_img.training.preamble import start_run
from omni_img.training.sources import open_split
from omni_img.training.state import to_host


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    train_source=None,
    eval_source=None,
) -> dict:
    """Train the tokenizer; returns the final evaluation report (also written to workdir)."""
    # ---------------------------------------------------------------- Mesh
    mesh, rules, workdir_path = start_run(config, workdir)

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
        images = tokenizer_model.to_unit_range(images_uint8)
        reconstruction, ids, _ = model.apply({"params": params}, images)
        return tokenizer_model.to_uint8_traced(reconstruction), ids

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
    usage_count = int(config.eval.usage_examples) or len(source)
    encode = jax.jit(lambda p, x: tokenizer_model.encode(model, p, x))
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
