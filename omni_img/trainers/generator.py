"""Trainer of the generator stage: (prompt, optional source tokens, history) -> visual tokens.

    omni-img train --config experiments/generator_tiny.py --workdir runs/generator_tiny

Trains on pre-tokenized splits (`omni-img tokenize`): images are never re-encoded.
Read top to bottom: Mesh -> Data -> Model -> Shard/Step/Restore/Loop -> Eval.
"""

from __future__ import annotations

import functools
import json
import pathlib

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from omni_img.config import validate_config
from omni_img.config.defaults import rules_from_config
from omni_img.config.saved import load_saved_config, save_config
from omni_img.data.tokenized import TokenizedSource
from omni_img.errors import UserError
from omni_img.models.generator import Generator, generator_loss, make_generator
from omni_img.sampling.session import pack_history
from omni_img.sharding import make_mesh
from omni_img.tokenizers.text import encode_prompt, make_text_tokenizer, pad_ids
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import finish_report, fit, restore_latest
from omni_img.training.metrics import MetricsWriter

TASKS = ("compose", "write", "edit")


def conditioning_example(record, *, tokenizer, model_cfg) -> dict[str, np.ndarray]:
    """One tokenized record -> the arrays of the generator's batch dict."""
    text_ids, text_mask = pad_ids(
        [encode_prompt(tokenizer, record["caption"], model_cfg.max_text_len)],
        model_cfg.max_text_len,
    )
    example = {
        "text_ids": text_ids[0],
        "text_mask": text_mask[0],
        "target_tokens": np.asarray(record["target_tokens"], np.int32),
        "source_tokens": np.asarray(record["source_tokens"], np.int32),
        "has_source": np.asarray(record["has_source"], bool),
    }
    if model_cfg.max_history_len > 0:
        history = json.loads(record.get("history") or "[]")
        ids, _ = pack_history(tokenizer, history, model_cfg.max_history_len)
        history_ids, history_mask = pad_ids([ids], model_cfg.max_history_len)
        example["history_ids"], example["history_mask"] = history_ids[0], history_mask[0]
    return example


class _Subset:
    """Maps a position in `indices` to that record of `source`."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __call__(self, position: int):
        return self.source[int(self.indices[position])]


def mixed_source(source: TokenizedSource, weights: ml_collections.ConfigDict, seed: int):
    """A MapDataset drawing tasks in proportion to `weights` (tasks absent are skipped)."""
    by_task = source.task_indices()
    parts, part_weights = [], []
    for task, weight in weights.items():
        if weight > 0 and task in by_task:
            indices = by_task[task]
            subset = grain.MapDataset.range(len(indices)).map(_Subset(source, indices))
            parts.append(subset.shuffle(seed).repeat())
            part_weights.append(float(weight))
    if not parts:
        raise UserError(f"config.data.task_weights {dict(weights)} selects no task present")
    return grain.MapDataset.mix(parts, part_weights)


def build_model(config: ml_collections.ConfigDict, grid, num_codes: int) -> Generator:
    model_cfg = config.model.to_dict()
    model_cfg.update(grid_h=grid[0], grid_w=grid[1], image_vocab_size=num_codes)
    model_cfg["dtype"] = config.compute_dtype
    model_cfg["remat"] = config.remat
    return make_generator(model_cfg)


def _init_fn(model: Generator, batch):
    one = jax.tree.map(lambda x: jnp.asarray(x[:1]), batch)
    return lambda rng: model.init(rng, one)["params"]


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train the generator; returns the final evaluation report."""
    # ---------------------------------------------------------------- Mesh
    validate_config(config, jax.device_count(), jax.process_count(), workdir)
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config)
    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir_path)

    # ---------------------------------------------------------------- Data
    train_source = TokenizedSource(config.data.tokenized_dir, config.data.train_split)
    grid, num_codes = tuple(train_source.metadata["grid"]), train_source.metadata["num_codes"]
    tokenizer = make_text_tokenizer(config.text_tokenizer)
    model = build_model(config, grid, num_codes)
    transform = functools.partial(conditioning_example, tokenizer=tokenizer, model_cfg=model.cfg)
    mixture = mixed_source(train_source, config.data.task_weights, config.seed)
    data_iterator = make_train_iterator(
        mixture,
        global_batch_size=config.batch_size,
        seed=config.seed,
        transform=transform,
        worker_count=config.data.worker_count,
        shuffle=False,  # each task's stream is already shuffled, and repeats
    )

    # ---------------------------------------------------------------- Model
    example = transform(train_source[0])
    example_batch = {k: np.stack([v] * config.batch_size) for k, v in example.items()}
    init_params = _init_fn(model, example_batch)

    # ---------------------------------------------------------------- Shard, Step, Restore, Loop
    writer = MetricsWriter(workdir_path)
    loss_fn = functools.partial(generator_loss, model=model, caption_dropout=config.caption_dropout)
    eval_source = TokenizedSource(config.data.tokenized_dir, config.data.eval_split)
    evaluate_now = functools.partial(validation_metrics, model, eval_source, transform, config)
    result = fit(
        config,
        workdir_path,
        mesh=mesh,
        rules=rules,
        init_params=init_params,
        loss_fn=loss_fn,
        example_batch=example_batch,
        data_iterator=data_iterator,
        writer=writer,
        hooks=[(config.eval_every, lambda state: evaluate_now(state.ema_params))],
        description="generator",
    )

    # ---------------------------------------------------------------- Eval
    report = evaluate_now(result.state.ema_params)
    return finish_report(report, result, writer, workdir_path / "generator_eval.json")


def validation_metrics(model, source, transform, config, params) -> dict[str, float]:
    """Token NLL and accuracy (teacher-forced, no caption dropout) per task on the
    first `config.eval.num_examples` validation records."""
    params = jax.device_get(nn.unbox(params))
    loss = jax.jit(lambda p, b: generator_loss(p, b, model=model)[1])
    count = min(int(config.eval.num_examples), len(source))
    totals: dict[str, list[float]] = {}
    batch_size = int(config.eval.batch_size)
    for start in range(0, count, batch_size):
        records = [source[i] for i in range(start, min(start + batch_size, count))]
        for task in sorted({r["task"] for r in records}):
            rows = [transform(r) for r in records if r["task"] == task]
            batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
            metrics = jax.device_get(loss(params, batch))
            entry = totals.setdefault(task, [0.0, 0.0, 0])
            entry[0] += float(metrics["loss"]) * len(rows)
            entry[1] += float(metrics["token_accuracy"]) * len(rows)
            entry[2] += len(rows)
    report: dict[str, float] = {}
    for task, (nll, accuracy, n) in totals.items():
        report[f"val_nll_{task}"] = nll / n
        report[f"val_token_accuracy_{task}"] = accuracy / n
    n_all = sum(entry[2] for entry in totals.values())
    report["val_nll"] = sum(entry[0] for entry in totals.values()) / max(n_all, 1)
    report["val_token_accuracy"] = sum(entry[1] for entry in totals.values()) / max(n_all, 1)
    return report


def load_workdir(workdir: str):
    """(config, model, EMA params on host, text tokenizer) of a trained generator workdir."""
    config = load_saved_config(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    source = TokenizedSource(config.data.tokenized_dir, config.data.eval_split)
    grid, num_codes = tuple(source.metadata["grid"]), source.metadata["num_codes"]
    model = build_model(config, grid, num_codes)
    tokenizer = make_text_tokenizer(config.text_tokenizer)
    transform = functools.partial(conditioning_example, tokenizer=tokenizer, model_cfg=model.cfg)
    example = transform(source[0])
    batch = {k: np.stack([v]) for k, v in example.items()}
    mesh = make_mesh(config.mesh)
    state = restore_latest(config, workdir, _init_fn(model, batch), mesh, rules_from_config(config))
    return config, model, jax.device_get(state.ema_params), tokenizer
