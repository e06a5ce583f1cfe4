"""Trainer of the generator stage: (prompt, optional source tokens, history) -> visual tokens.

    omni-img train --config experiments/generator_tiny.py --workdir runs/generator_tiny

Trains on pre-tokenized splits (`omni-img tokenize`): images are never re-encoded.
Every evaluation reports validation NLL and token accuracy and writes a grid of greedy
samples for validation prompts, decoded with the tokenizer's conv decoder; the final one
also judges `config.eval.judge_per_task` samples per task of the test split (held-out
combinations and words). Read top to bottom: Mesh -> Data -> Model ->
Shard/Step/Restore/Loop -> Eval. The stage itself (task mixture, batches, model, train
step, loading a workdir): omni_img.stages.generator.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np

from omni_img.evals.images import save_grid
from omni_img.evals.samples import (
    curve_records,
    evaluate_episodes,
    evaluate_samples,
    judge_curve_sample,
    tokenizer_fns,
)
from omni_img.models.generator import generator_loss
from omni_img.models.tokenizer import to_uint8
from omni_img.sampling import ar
from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.stages.generator import (
    mixed_source,
    model_and_transform,
    text_tokenizer_for,
    train_step_parts,
)
from omni_img.stages.run import TrainedRun
from omni_img.training.data import make_train_iterator
from omni_img.training.fit import finish_report, fit, stopped_report
from omni_img.training.metrics import MetricsWriter
from omni_img.training.preamble import start_run
from omni_img.training.sources import open_split, open_tokenized
from omni_img.training.state import to_host


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train the generator; returns the final evaluation report."""
    # ---------------------------------------------------------------- Mesh
    mesh, rules, workdir_path = start_run(config, workdir)

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
        minute_hooks=[(float(config.eval.curve_every_minutes), curve_point)],
        description="generator",
    )

    # ---------------------------------------------------------------- Eval
    if (stopped := stopped_report(result, writer)) is not None:
        return stopped
    report = evaluate_now(result.state, final=True)
    if config.eval.curve_every_minutes > 0:  # the curve's last mark: the end
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

    def _run(self, params) -> TrainedRun:
        """The run so far: the data's tokenizer (loaded once) and these generator params."""
        if self._tokenizer is None:
            _, model, tokenizer_params = tokenizer_stage.load_workdir(self.tokenizer_workdir)
            self._tokenizer = (model, tokenizer_params)
        text = text_tokenizer_for(self.config)
        return TrainedRun(*self._tokenizer, self.model, params, text)

    def __call__(self, params, step: int, final: bool) -> dict:
        count = min(int(self.config.eval.samples), len(self.eval_source))
        per_task = int(self.config.eval.judge_per_task) if final else 0
        episodes = int(self.config.eval.episodes) if final else 0
        if not self.tokenizer_workdir or not (count or per_task or episodes):
            return {}
        run = self._run(params)
        sampling = ar.SamplingConfig(**self.config.sampling.to_dict())
        report = {}
        if count:
            rows = [self.transform(self.eval_source[i]) for i in range(count)]
            cond = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "target_tokens"}
            tokens = ar.sample(self.model, params, cond, jax.random.PRNGKey(0), sampling)
            _, decode = tokenizer_fns(run.tokenizer)
            images = to_uint8(np.asarray(decode(run.tokenizer_params, tokens)))
            if jax.process_index() == 0:
                save_grid(images, self.workdir / f"samples_{step:06d}.png", columns=8)
        if per_task:
            test = open_split(self.config.data, "test")
            judged = evaluate_samples(
                run, test, per_task=per_task, sampling=sampling, grid_dir=self.workdir,
                grid_prefix="samples_test", ceiling=True,
            )  # fmt: skip
            report["test_judge"] = judged["conv"]
            report["test_judge_ceiling"] = judged["tokenizer_ceiling"]
        if episodes:
            test = open_split(self.config.data, "test")
            report["test_episodes"] = evaluate_episodes(
                run, test, count=episodes, sampling=sampling
            )
        return report

    def curve_point(self, params, step: int, train_minutes: float) -> dict:
        """Judge the fixed validation sample; append {step, train_minutes, accuracy per
        group} to curve.jsonl; returns it as `curve_*` scalars for the metrics."""
        per_group = int(self.config.eval.curve_per_task)
        if not self.tokenizer_workdir or per_group <= 0:
            return {}
        if self._curve_records is None:
            split = open_split(self.config.data, self.config.data.eval_split)
            self._curve_records = curve_records(split, per_group)
        sampling = ar.SamplingConfig(**self.config.sampling.to_dict())
        scores = judge_curve_sample(self._run(params), self._curve_records, sampling)
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
