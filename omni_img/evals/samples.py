"""Generate images for dataset records with trained stages, and judge them.

This is how the generator's quality is measured: prompts (and edit sources) of the
test split go through the generator; its tokens are decoded with the tokenizer's conv
decoder and, when a rolling decoder is given, with it too; the judge scores every image
against the record's spec. The tokenizer's reconstructions of the same records' target
images, judged the same way, give the ceiling of those scores (`reconstruction_ceiling`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from omni_img.data import reading
from omni_img.errors import UserError
from omni_img.evals.generation import judge_records
from omni_img.evals.images import save_grid
from omni_img.models import tokenizer as tokenizer_model
from omni_img.models.tokenizer import to_uint8
from omni_img.sampling import ar
from omni_img.sampling import rolling as rolling_sampling
from omni_img.stages.generator import conditioning_example
from omni_img.stages.run import TrainedRun


@functools.lru_cache(maxsize=8)
def tokenizer_fns(model):
    """Jitted (encode(params, uint8 images) -> ids, decode(params, ids) -> [-1, 1] images)."""
    encode = functools.partial(tokenizer_model.encode, model)
    decode = functools.partial(tokenizer_model.decode, model)
    return jax.jit(encode), jax.jit(decode)


def conditioning(run: TrainedRun, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The generator's conditioning batch for dataset records (edit sources tokenized)."""
    encode, _ = tokenizer_fns(run.tokenizer)
    grid = run.generator.cfg.grid
    rows = []
    for record in records:
        task = reading.text(record["task"])
        source_tokens = np.zeros(grid, np.int32)
        if task == "edit":
            image = np.asarray(record["source_image"], np.uint8)[None]
            source_tokens = np.asarray(encode(run.tokenizer_params, image))[0]
            if source_tokens.shape != tuple(grid):
                raise UserError(
                    f"the tokenizer turns this dataset's {image.shape[1]}x{image.shape[2]} "
                    f"images into a {source_tokens.shape} token grid, but the generator "
                    f"expects {tuple(grid)}: were they trained on the same image size?"
                )
        tokenized = {
            "caption": reading.text(record["caption"]),
            "history": reading.text(record.get("history")) or "[]",
            "target_tokens": np.zeros(grid, np.int32),
            "source_tokens": source_tokens,
            "has_source": task == "edit",
        }
        rows.append(
            conditioning_example(
                tokenized, tokenizer=run.text_tokenizer, model_cfg=run.generator.cfg
            )
        )
    batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    batch.pop("target_tokens")
    return batch


def generate_images(
    run: TrainedRun,
    records: Sequence[Mapping[str, Any]],
    sampling: ar.SamplingConfig,
    seed: int,
    decoders: Sequence[str] = ("conv",),
) -> dict[str, np.ndarray]:
    """{decoder: uint8 (B, H, W, 3)} for the records' prompts; the same tokens for all."""
    cond = conditioning(run, records)
    rng = jax.random.PRNGKey(seed)
    tokens = ar.sample(run.generator, run.generator_params, cond, rng, sampling)
    _, decode = tokenizer_fns(run.tokenizer)
    images = {}
    for decoder in decoders:
        if decoder == "conv":
            images[decoder] = to_uint8(np.asarray(decode(run.tokenizer_params, tokens)))
            continue
        e, mask = run.generator.apply({"params": run.generator_params}, cond, method="encode")
        out, _ = rolling_sampling.sample(
            run.rolling_params, run.rolling_cfg, tokens, e, mask, rng, mode=decoder
        )
        images[decoder] = to_uint8(np.asarray(out))
    return images


def evaluate_samples(
    run: TrainedRun,
    source,
    *,
    per_task: int,
    sampling: ar.SamplingConfig,
    seed: int = 0,
    decoders: Sequence[str] = ("conv",),
    batch_size: int = 32,
    grid_dir: str | pathlib.Path | None = None,
    grid_prefix: str = "samples",
    ceiling: bool = False,
) -> dict[str, Any]:
    """Judge generated images for the first `per_task` records of each task of `source`.

    Returns {decoder: judge summary}, and with `ceiling` also "tokenizer_ceiling": the
    judge on the tokenizer's reconstructions of the same records' target images. With
    `grid_dir`, writes a sample grid per task and decoder
    (`<grid_prefix>_<task>_<decoder>.png`).
    """
    chosen = _first_per_task(source, per_task)
    report: dict[str, Any] = {"sampling": dataclasses.asdict(sampling), "seed": seed}
    made: dict[str, list[np.ndarray]] = {d: [] for d in decoders}
    for start in range(0, len(chosen), batch_size):
        records = chosen[start : start + batch_size]
        for decoder, images in generate_images(
            run, records, sampling, seed + start, decoders
        ).items():
            made[decoder].append(images)
    for decoder in decoders:
        images = np.concatenate(made[decoder])
        summary, _ = judge_records(images, chosen)
        report[decoder] = summary
        if grid_dir is not None:
            tasks = np.asarray([reading.text(r["task"]) for r in chosen])
            for task in sorted(set(tasks)):
                path = pathlib.Path(grid_dir) / f"{grid_prefix}_{task}_{decoder}.png"
                save_grid(images[tasks == task][:32], path, columns=8)
    if ceiling:
        report["tokenizer_ceiling"] = reconstruction_ceiling(run, chosen, batch_size)
    return report


def reconstruction_ceiling(
    run: TrainedRun, records: Sequence[Mapping[str, Any]], batch_size: int = 32
) -> dict[str, Any]:
    """The judge's summary of the tokenizer's reconstructions (encode, then the conv
    decoder) of the records' own target images.

    A generator that wrote every record's ground-truth tokens exactly would score this
    through the conv decoder, so it bounds the generator's figures on those records:
    what the tokenizer loses (a soft edge that comes back hard) no generator can restore.
    """
    encode, decode = tokenizer_fns(run.tokenizer)
    reconstructed = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        images = np.stack([np.asarray(record["image"], np.uint8) for record in batch])
        ids = encode(run.tokenizer_params, images)
        reconstructed.append(to_uint8(np.asarray(decode(run.tokenizer_params, ids))))
    summary, _ = judge_records(np.concatenate(reconstructed), records)
    return summary


def _first_per_task(source, per_task: int) -> list[dict]:
    counts: dict[str, int] = {}
    chosen = []
    for index in range(len(source)):
        record = source[index]
        task = reading.text(record["task"])
        if counts.get(task, 0) < per_task:
            counts[task] = counts.get(task, 0) + 1
            chosen.append(record)
        if len(counts) == 3 and all(n >= per_task for n in counts.values()):
            break
    return chosen


def session_turns(run: TrainedRun, sampling: ar.SamplingConfig, seed: int, batch_size: int = 32):
    """A `RunTurn` for `episodes.judge_chained`: samples every session's next turn with
    the generator (batches of `batch_size`), records it, decodes with the conv decoder."""
    _, decode = tokenizer_fns(run.tokenizer)
    calls = iter(range(1 << 30))

    def run_turn(sessions, instructions) -> np.ndarray:
        rng = jax.random.PRNGKey(seed + next(calls))
        images = []
        for start in range(0, len(sessions), batch_size):
            chunk = list(zip(sessions, instructions, strict=True))[start : start + batch_size]
            conds = [session.conditioning(text) for session, text in chunk]
            cond = {k: np.concatenate([c[k] for c in conds]) for k in conds[0]}
            params = run.generator_params
            tokens = np.asarray(ar.sample(run.generator, params, cond, rng, sampling))
            for (session, text), grid in zip(chunk, tokens, strict=True):
                session.add_turn(text, grid[None])
            images.append(to_uint8(np.asarray(decode(run.tokenizer_params, tokens))))
        return np.concatenate(images)

    return run_turn


def evaluate_episodes(
    run: TrainedRun, source, *, count: int, sampling: ar.SamplingConfig, seed: int = 0, turns=3
) -> dict[str, Any]:
    """The first `count` `turns`-turn edit episodes of `source`, chained through sessions
    (each turn edits the generator's own previous image) and judged turn by turn."""
    from omni_img.evals.episodes import chained_episodes, judge_chained
    from omni_img.sampling.session import Session

    chosen = chained_episodes(source, count, turns)
    encode, _ = tokenizer_fns(run.tokenizer)
    sessions = []
    for episode in chosen:
        start = np.asarray(episode[0]["source_image"], np.uint8)[None]
        tokens = np.asarray(encode(run.tokenizer_params, start))
        cfg, text = run.generator.cfg, run.text_tokenizer
        sessions.append(Session.for_model(cfg, text, tokens))
    return judge_chained(chosen, sessions, session_turns(run, sampling, seed))


CURVE_GROUPS = ("single_object", "compose", "write", "edit")


def curve_records(source, per_group: int) -> dict[str, list[dict]]:
    """A fixed sample for learning curves: the first `per_group` records of each of
    `CURVE_GROUPS` in `source` ("compose": scenes of 2-3 objects; single objects apart)."""
    chosen: dict[str, list[dict]] = {group: [] for group in CURVE_GROUPS}
    for index in range(len(source)):
        record = source[index]
        group = reading.text(record["task"])
        if group == "compose" and reading.text(record.get("category")) == "single_object":
            group = "single_object"
        if group in chosen and len(chosen[group]) < per_group:
            chosen[group].append(record)
        if all(len(records) >= per_group for records in chosen.values()):
            break
    return chosen


def judge_curve_sample(
    run: TrainedRun,
    groups: Mapping[str, Sequence[Mapping[str, Any]]],
    sampling: ar.SamplingConfig,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """`curve_scores` of generated images (conv decoder) for each group of
    `curve_records`."""
    scores: dict[str, float] = {}
    for group, records in groups.items():
        if not records:
            continue
        images = np.concatenate([
            generate_images(run, records[s : s + batch_size], sampling, seed + s)["conv"]
            for s in range(0, len(records), batch_size)
        ])  # fmt: skip
        summary, _ = judge_records(images, records)
        scores.update(curve_scores(group, summary))
    return scores


def curve_scores(group: str, summary: Mapping[str, Any]) -> dict[str, float]:
    """One group's figures at a curve mark: {"<group>": judge accuracy}; for the write
    group "write_exact" (the share OCR read exactly); for scenes, each attribute's share
    right as "<group>_<attribute>". Early in training no scene passes, while the
    attributes (background and colour first, shape last) already tell variants apart."""
    scores = {group: float(summary["accuracy"])}
    if group == "write" and "write_ocr" in summary:
        scores["write_exact"] = exact_share(summary["write_ocr"])
    for name, share in summary.get("compose_attributes", {}).items():
        scores[f"{group}_{name}"] = float(share)
    return scores


def exact_share(ocr: Mapping[str, Any]) -> float:
    """The share of *all* write images whose word OCR read exactly: an image that failed
    before OCR (wrong background or sign) counts as not exact, so the figure is 0, not
    missing, while no image reaches OCR."""
    if not ocr["of"]:
        return 0.0
    exact = (ocr["exact_match"] or 0.0) * ocr["read"]
    return float(exact / ocr["of"])
