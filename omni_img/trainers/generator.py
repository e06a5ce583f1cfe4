"""Trainer of the generator stage: (prompt, optional source tokens, history) -> visual tokens.

    omni-img train --config experiments/generator_tiny.py --workdir runs/generator_tiny

Trains on pre-tokenized splits (`omni-img tokenize`): images are never re-encoded.
Every evaluation reports validation NLL and token accuracy and writes a grid of greedy
samples for validation prompts, decoded with the tokenizer's conv decoder; the final one
also judges `config.eval.judge_per_task` samples per task of the test split (held-out
combinations and words). Read top to bottom: Mesh -> Data -> Model ->
Shard/Step/Restore/Loop -> Eval.
"""

from __future__ import annotations

import functools
import json
import pathlib

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
from omni_img.evals.images import save_grid
from omni_img.models.generator import Generator, generator_loss, make_generator
from omni_img.sampling import ar
from omni_img.sampling.session import pack_history
from omni_img.sharding import make_mesh
from omni_img.text.tokenizer import as_text, encode_prompt, make_text_tokenizer, pad_ids
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import StageStep, finish_report, fit, restore_latest, stopped_report
from omni_img.training.metrics import MetricsWriter
from omni_img.training.sources import open_split, open_tokenized
from omni_img.training.state import to_host

TASKS = ("compose", "write", "edit")


def conditioning_example(record, *, tokenizer, model_cfg) -> dict[str, np.ndarray]:
    """One tokenized record -> the arrays of the generator's batch dict."""
    target = np.asarray(record["target_tokens"], np.int32)
    if model_cfg.class_conditional:
        if "label" not in record:
            raise UserError("a class-conditional generator needs records with a 'label'")
        return {"class_id": np.asarray(record["label"], np.int32), "target_tokens": target}
    text_ids, text_mask = pad_ids(
        [training_prompt_ids(tokenizer, record["caption"], model_cfg.max_text_len)],
        model_cfg.max_text_len,
    )
    example = {
        "text_ids": text_ids[0],
        "text_mask": text_mask[0],
        "target_tokens": target,
        "source_tokens": np.asarray(record["source_tokens"], np.int32),
        "has_source": np.asarray(record["has_source"], bool),
    }
    if model_cfg.max_history_len > 0:
        history = json.loads(record.get("history") or "[]")
        ids, _ = pack_history(tokenizer, history, model_cfg.max_history_len)
        history_ids, history_mask = pad_ids([ids], model_cfg.max_history_len)
        example["history_ids"], example["history_mask"] = history_ids[0], history_mask[0]
    return example


def training_prompt_ids(tokenizer, caption, max_len: int) -> list[int]:
    """encode_prompt's ids of a training caption, its last words dropped until it fits
    the encoder's context. Web captions (WebDataset shards, Parquet columns) can run
    past it, and one long caption must not stop a run; sampling still refuses an
    over-long prompt, and an empty caption is still an error."""
    text = as_text(caption)
    words = text.split()
    for shorter in (text, *(" ".join(words[:n]) for n in range(len(words) - 1, 1, -1))):
        try:
            return encode_prompt(tokenizer, shorter, max_len)  # as written, if it fits
        except UserError:
            continue
    return encode_prompt(tokenizer, words[0] if words else text, max_len)


class _Subset:
    """Maps a position in `indices` to that record of `source`."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __call__(self, position: int):
        return self.source[int(self.indices[position])]


def mixed_source(source: TokenizedSource, weights: ml_collections.ConfigDict, seed: int):
    """A MapDataset drawing tasks in proportion to `weights` (tasks absent are skipped);
    with no weights (a dataset without tasks, e.g. ImageNet) every record, shuffled."""
    if not weights:
        return with_drawn_caption(grain.MapDataset.source(source).shuffle(seed).repeat(), seed)
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
    return with_drawn_caption(grain.MapDataset.mix(parts, part_weights), seed)


def _draw_caption(record, rng: np.random.Generator):
    captions = json.loads(record.get("captions") or "[]")
    if len(captions) < 2:
        return record
    return {**record, "caption": captions[int(rng.integers(len(captions)))]}


def with_drawn_caption(dataset: grain.MapDataset, seed: int) -> grain.MapDataset:
    """Records with several captions (COCO keeps about five an image) get one of them
    each time they are drawn. The draw is a function of the seed and the position in
    the endless stream, so every epoch pairs an image with other words, and a resumed
    run draws exactly what the uninterrupted one drew."""
    return dataset.random_map(_draw_caption, seed=seed + 1)


def token_space(config: ml_collections.ConfigDict, metadata=None) -> tuple[tuple[int, int], int]:
    """(token grid, codebook size) the generator writes: from the tokenized data's
    metadata, which must agree with `config.model` where the config names them (a
    value > 0); from `config.model` (grid_h, grid_w, image_vocab_size) alone when there
    is no data (ahead-of-time compilation of a preset)."""
    named = {key: config.model.get(key) or 0 for key in ("grid_h", "grid_w", "image_vocab_size")}
    if metadata is not None:
        found = dict(zip(named, (*metadata["grid"], metadata["num_codes"]), strict=True))
        for key, value in named.items():
            if value and value != found[key]:
                raise UserError(
                    f"config.model.{key}={value} but the tokenized data has {found[key]}"
                )
        named = found
    missing = [key for key, value in named.items() if not value]
    if missing:
        raise UserError(
            f"no tokenized data and no config.model.{missing[0]}: the token grid is unknown"
        )
    return (int(named["grid_h"]), int(named["grid_w"])), int(named["image_vocab_size"])


def build_model(config: ml_collections.ConfigDict, grid, num_codes: int) -> Generator:
    model_cfg = config.model.to_dict()
    model_cfg.update(grid_h=grid[0], grid_w=grid[1], image_vocab_size=num_codes)
    model_cfg["dtype"] = config.compute_dtype
    model_cfg["remat"] = config.remat
    return make_generator(model_cfg)


def placeholder_record(grid: tuple[int, int]) -> dict:
    """A tokenized record with every field a batch reads: gives the batch's shapes."""
    zeros = np.zeros(grid, np.int16)
    return {"caption": "-", "history": "[]", "target_tokens": zeros, "source_tokens": zeros,
            "has_source": False, "label": 0}  # fmt: skip


def _init_fn(model: Generator, batch):
    one = jax.tree.map(lambda x: jnp.asarray(x[:1]), batch)
    return lambda rng: model.init(rng, one)["params"]


def text_tokenizer_for(config: ml_collections.ConfigDict):
    """The config's text tokenizer; ``text_align_words`` lays words out on the encoder's
    ``text_group``-byte positions (configs saved before the key existed: off)."""
    word_slots = config.model.text_group if config.get("text_align_words", False) else 0
    return make_text_tokenizer(config.text_tokenizer, word_slots=word_slots)


def model_and_transform(config: ml_collections.ConfigDict, metadata=None):
    """(model, record -> batch arrays transform) for the token space of `metadata`."""
    grid, num_codes = token_space(config, metadata)
    model = build_model(config, grid, num_codes)
    tokenizer = text_tokenizer_for(config)
    transform = functools.partial(conditioning_example, tokenizer=tokenizer, model_cfg=model.cfg)
    return model, transform


def train_step_parts(config: ml_collections.ConfigDict, metadata=None) -> StageStep:
    """The generator's train step (initialiser, loss, batch shapes) from its config."""
    model, transform = model_and_transform(config, metadata)
    example = transform(placeholder_record(model.cfg.grid))
    example_batch = {k: np.stack([v] * config.batch_size) for k, v in example.items()}
    return StageStep(
        init_params=_init_fn(model, example_batch),
        loss_fn=functools.partial(
            generator_loss,
            model=model,
            caption_dropout=config.caption_dropout,
            # Runs saved before input masking existed have no key: they trained without.
            input_masking=config.get("input_masking", 0.0),
            foreground_weight=config.get("foreground_weight", 1.0),
        ),
        example_batch=example_batch,
    )


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
    train_source = open_tokenized(config.data, config.data.train_split)
    model, transform = model_and_transform(config, train_source.metadata)
    mixture = mixed_source(train_source, config.data.task_weights, config.seed)
    data_iterator = make_train_iterator(
        mixture,
        global_batch_size=config.batch_size,
        seed=config.seed,
        transform=transform,
        worker_count=config.data.worker_count,
        shuffle=False,  # each task's stream is already shuffled, and repeats
    )

    # ---------------------------------------------------------------- Shard, Step, Restore, Loop
    writer = MetricsWriter(workdir_path)
    eval_source = open_tokenized(config.data, config.data.eval_split)
    samples = SampleJudge(model, config, eval_source, transform, workdir_path)

    def evaluate_now(state, final: bool = False):
        report = validation_metrics(model, eval_source, transform, config, state.ema_params)
        return {**report, **samples(to_host(state.ema_params), int(state.step), final)}

    def curve_point(state, *, train_minutes: float):
        return samples.curve_point(to_host(state.ema_params), int(state.step), train_minutes)

    result = fit(
        config,
        workdir_path,
        mesh=mesh,
        rules=rules,
        stage=train_step_parts(config, train_source.metadata),
        data_iterator=data_iterator,
        writer=writer,
        hooks=[(config.eval_every, evaluate_now)],
        minute_hooks=[(float(config.eval.get("curve_every_minutes", 0.0)), curve_point)],
        description="generator",
    )

    # ---------------------------------------------------------------- Eval
    if (stopped := stopped_report(result, writer)) is not None:
        return stopped
    report = evaluate_now(result.state, final=True)
    if config.eval.get("curve_every_minutes", 0.0) > 0:  # the curve's last mark: the end
        report.update(curve_point(result.state, train_minutes=result.train_minutes))
    return finish_report(report, result, writer, workdir_path / "generator_eval.json")


class SampleJudge:
    """Samples of the generator (`config.sampling`), decoded with the conv decoder of the
    tokenizer that made its data (the tokenized data names it).

    Each call writes `samples_<step>.png`: the first `config.eval.samples` validation
    prompts (0 = none), from the tokenized records, so no image is read. A final call
    also judges `config.eval.judge_per_task` samples of each task of the dataset's test
    split (held-out combinations and words) and writes `samples_test_<task>_conv.png`;
    `test_judge_ceiling` is the judge on the tokenizer's reconstructions of the same
    records, the most the conv decoder lets any generator score on them; and
    `test_episodes` runs `config.eval.episodes` 3-turn edit episodes of the test split
    through sessions, each turn editing the generator's own previous image.

    `curve_point` judges a fixed validation sample (`config.eval.curve_per_task` records
    each of single objects, compose, write and edit) and appends it to `curve.jsonl`
    with the training minutes: the learning curve variants are compared on.
    """

    def __init__(self, model, config, eval_source, transform, workdir: pathlib.Path):
        self.model, self.config, self.workdir = model, config, workdir
        self.eval_source, self.transform = eval_source, transform
        self.tokenizer_workdir = eval_source.metadata.get("tokenizer_workdir", "")
        self._tokenizer = None
        self._curve_records = None
        # A resumed run's curve goes on from its last mark (the minutes between that
        # mark and the interruption are not counted: up to one interval).
        self.minutes_before = _last_curve_minutes(workdir / CURVE_FILE)

    def _stages(self, params):
        from omni_img.evals.samples import Stages
        from omni_img.trainers import tokenizer as tokenizer_stage

        if self._tokenizer is None:
            _, model, tokenizer_params = tokenizer_stage.load_workdir(self.tokenizer_workdir)
            self._tokenizer = (model, tokenizer_params)
        text = text_tokenizer_for(self.config)
        return Stages(*self._tokenizer, self.model, params, text)

    def __call__(self, params, step: int, final: bool) -> dict:
        from omni_img.evals.images import to_uint8
        from omni_img.evals.samples import evaluate_episodes, evaluate_samples, tokenizer_fns

        count = min(int(self.config.eval.get("samples", 0)), len(self.eval_source))
        per_task = int(self.config.eval.get("judge_per_task", 0)) if final else 0
        episodes = int(self.config.eval.get("episodes", 0)) if final else 0
        if not self.tokenizer_workdir or not (count or per_task or episodes):
            return {}
        stages = self._stages(params)
        sampling = ar.SamplingConfig(**self.config.sampling.to_dict())
        report = {}
        if count:
            rows = [self.transform(self.eval_source[i]) for i in range(count)]
            cond = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "target_tokens"}
            tokens = ar.sample(self.model, params, cond, jax.random.PRNGKey(0), sampling)
            _, decode = tokenizer_fns(stages.tokenizer)
            images = to_uint8(np.asarray(decode(stages.tokenizer_params, tokens)))
            if jax.process_index() == 0:
                save_grid(images, self.workdir / f"samples_{step:06d}.png", columns=8)
        if per_task:
            test = open_split(self.config.data, "test")
            judged = evaluate_samples(
                stages, test, per_task=per_task, sampling=sampling, grid_dir=self.workdir,
                grid_prefix="samples_test", ceiling=True,
            )  # fmt: skip
            report["test_judge"] = judged["conv"]
            report["test_judge_ceiling"] = judged["tokenizer_ceiling"]
        if episodes:
            test = open_split(self.config.data, "test")
            report["test_episodes"] = evaluate_episodes(
                stages, test, count=episodes, sampling=sampling
            )
        return report

    def curve_point(self, params, step: int, train_minutes: float) -> dict:
        """Judge the fixed validation sample; append {step, train_minutes, accuracy per
        group} to curve.jsonl; returns it as `curve_*` scalars for the metrics."""
        from omni_img.evals.samples import curve_records, judge_curve_sample

        per_group = int(self.config.eval.get("curve_per_task", 0))
        if not self.tokenizer_workdir or per_group <= 0:
            return {}
        if self._curve_records is None:
            split = open_split(self.config.data, self.config.data.eval_split)
            self._curve_records = curve_records(split, per_group)
        sampling = ar.SamplingConfig(**self.config.sampling.to_dict())
        scores = judge_curve_sample(self._stages(params), self._curve_records, sampling)
        minutes = round(self.minutes_before + train_minutes, 2)
        if jax.process_index() == 0:
            with open(self.workdir / CURVE_FILE, "a") as f:
                f.write(json.dumps({"step": step, "train_minutes": minutes, **scores}) + "\n")
        return {"curve_train_minutes": minutes, **{f"curve_{k}": v for k, v in scores.items()}}


CURVE_FILE = "curve.jsonl"


def _last_curve_minutes(path: pathlib.Path) -> float:
    if not path.is_file():
        return 0.0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return float(json.loads(lines[-1])["train_minutes"]) if lines else 0.0


def validation_metrics(model, source, transform, config, params) -> dict[str, float]:
    """Token NLL and accuracy (teacher-forced, no caption dropout) per task on the
    first `config.eval.num_examples` validation records."""
    params = to_host(params)
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


def load_workdir(workdir: str, step: int | None = None):
    """(config, model, EMA params on host, text tokenizer) of a trained generator workdir,
    from its latest checkpoint or the one at `step`."""
    config = load_saved_config(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    metadata = TokenizedSource(config.data.tokenized_dir, config.data.eval_split).metadata
    model, _ = model_and_transform(config, metadata)
    init_params = train_step_parts(config, metadata).init_params
    mesh = make_mesh(config.mesh)
    state = restore_latest(config, workdir, init_params, mesh, rules_from_config(config), step)
    return (
        config,
        model,
        jax.device_get(state.ema_params),
        text_tokenizer_for(config),
    )
