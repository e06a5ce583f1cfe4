"""`omni-img eval bundle`: generate from the test split's prompts with a bundle, and report.

For the first N test records of each task, the bundle makes one image per record and
decoder: record i (in the order taken) with seed `seed + i`, exactly the image
`omni-img generate --prompt CAPTION --seed SEED+i --decoder D` makes (edits: with the
record's source image and its earlier instructions as history). Per decoder the report
gives the judge (accuracy per task, GenEval categories, compose attributes, OCR exact
match and CER, accuracy per edit op), FID against the same records' ground-truth images
and CLIP score (text-to-image records; when CLIP weights are given). For the tokenizer:
PSNR of encode + conv decode on the ground-truth images, and their FID (rFID).

Dataset images of another size than the bundle's are resized (box filter) to it, with a
note in the report: the judge and FID then see the images at the bundle's resolution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from omni_img.data import reading
from omni_img.errors import UserError

RECONSTRUCT_BATCH = 16


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if tuple(image.shape[:2]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BOX))


def select_records(
    source,
    per_task: int,
    image_size: tuple[int, int],
    use_source: bool,
    prompt_fits: Callable[[Mapping[str, Any]], bool] | None = None,
):
    """(records, notes): the first `per_task` records of each task, images at `image_size`.

    Edit records are left out for a text-to-image bundle, and records whose prompt does
    not fit the bundle's text context (`prompt_fits`) are passed over; notes say so.
    """
    if per_task < 1:
        raise UserError(f"--per_task must be at least 1, got {per_task}")
    counts: dict[str, int] = {}
    skipped = {"edit": 0, "long": 0}
    chosen = []
    for index in range(len(source)):
        record = source[index]
        task = reading.text(record["task"])
        if counts.get(task, 0) >= per_task:
            if len(counts) == 3 and all(n >= per_task for n in counts.values()):
                break
            continue
        if task == "edit" and not use_source:
            skipped["edit"] += 1
        elif prompt_fits is not None and not prompt_fits(record):
            skipped["long"] += 1
        else:
            counts[task] = counts.get(task, 0) + 1
            chosen.append(record)
    if not chosen:
        raise UserError("no test record to generate from (none fits the bundle)")
    notes = []
    if skipped["edit"]:
        notes.append(f"text-to-image bundle: {skipped['edit']} edit records skipped")
    if skipped["long"]:
        notes.append(
            f"{skipped['long']} records passed over: prompt longer than the bundle's context"
        )
    short = {t: n for t, n in counts.items() if n < per_task}
    if short:
        notes.append(f"fewer than {per_task} records for: {short}")
    found = tuple(np.asarray(chosen[0]["image"]).shape[:2])
    if found != tuple(image_size):
        notes.append(
            f"dataset images are {found[1]}x{found[0]}, the bundle's {image_size[1]}x"
            f"{image_size[0]}: ground truth and edit sources resized (box filter)"
        )
    records = []
    for record in chosen:
        record = dict(record)
        for key in ("image", "source_image"):
            if key in record:
                record[key] = _resize(np.asarray(record[key], np.uint8), image_size)
        records.append(record)
    return records, notes


def prompt_fits(pipeline) -> Callable[[Mapping[str, Any]], bool]:
    """Whether a record's caption (and history) fits the bundle's text context."""
    from omni_img.text.tokenizer import encode_prompt

    max_len = pipeline.generator.cfg.max_text_len

    def fits(record: Mapping[str, Any]) -> bool:
        try:
            encode_prompt(pipeline.text_tokenizer, reading.text(record["caption"]), max_len)
        except UserError:
            return False
        return True

    return fits


def conditioning(pipeline, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The generator's conditioning for a dataset record (edits: source and history)."""
    from omni_img.sampling.session import edit_conditioning

    source = None
    history: list[str] = []
    if reading.text(record["task"]) == "edit":
        source = pipeline.encode_image(np.asarray(record["source_image"], np.uint8))
        history = json.loads(reading.text(record.get("history")) or "[]")
    return edit_conditioning(
        pipeline.text_tokenizer,
        reading.text(record["caption"]),
        pipeline.generator.cfg,
        source,
        history,
    )


def generate(pipeline, records, *, seed: int, decoders: Sequence[str], sampling, progress=False):
    """{decoder: uint8 (N, H, W, 3)}: record i with seed `seed + i`, one token grid for all."""
    made: dict[str, list[np.ndarray]] = {d: [] for d in decoders}
    for i, record in enumerate(records):
        cond = conditioning(pipeline, record)
        tokens = pipeline.sample_tokens(cond, seed + i, sampling)
        for decoder in decoders:
            made[decoder].append(pipeline.decode(tokens, cond, seed + i, decoder))
        if progress:
            print(f"\rgenerated {i + 1}/{len(records)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {d: np.stack(images) for d, images in made.items()}


def reconstruct(pipeline, images: np.ndarray) -> np.ndarray:
    """The tokenizer's round trip of (N, H, W, 3) uint8, in fixed-size (padded) batches."""
    out = []
    for start in range(0, len(images), RECONSTRUCT_BATCH):
        batch = images[start : start + RECONSTRUCT_BATCH]
        pad = RECONSTRUCT_BATCH - len(batch)
        padded = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)]) if pad else batch
        out.append(pipeline.reconstruct(padded)[: len(batch)])
    return np.concatenate(out)


def chained_episodes(pipeline, source, *, count: int, seed: int, decoder: str, sampling):
    """`count` 3-turn edit episodes of `source` run through the pipeline's sessions (each
    turn edits the bundle's own previous image) and judged turn by turn."""
    from omni_img.evals import episodes as episodes_lib

    chosen = episodes_lib.chained_episodes(source, count)
    sessions = [pipeline.new_session(np.asarray(e[0]["source_image"], np.uint8)) for e in chosen]
    seeds = iter(range(seed, seed + 3 * len(chosen)))

    def run_turn(sessions, instructions) -> np.ndarray:
        return np.stack([
            pipeline.generate(text, session=session, seed=next(seeds), decoder=decoder,
                              sampling=sampling)
            for session, text in zip(sessions, instructions, strict=True)
        ])  # fmt: skip

    return episodes_lib.judge_chained(chosen, sessions, run_turn)


def fid_available(inception_weights: str | None) -> str | None:
    """None if the FID weights can be loaded, else why not (one line)."""
    from omni_img.evals.metrics import weights

    try:
        weights.fid_weights_path(inception_weights)
    except UserError as error:
        return str(error)
    return None


def _stats_path(cache: str, dataset: str, images: np.ndarray, preprocessing: str, weights: str):
    digest = hashlib.sha256()
    for part in (dataset, preprocessing, os.path.basename(weights), str(images.shape)):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(images).tobytes())
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_") or "dataset"
    stem = f"{name}-test-{len(images)}img-{images.shape[1]}px-{preprocessing}"
    return os.path.join(cache, f"{stem}-{digest.hexdigest()[:12]}.npz")


def reference_stats(images, extractor, *, cache: str, dataset: str, preprocessing: str, weights):
    """(mu, sigma, path, cached?) of the ground-truth images, from or into `cache`."""
    from omni_img.evals.metrics import fid

    path = _stats_path(cache, dataset, images, preprocessing, weights)
    if os.path.isfile(path):
        mu, sigma = fid.load_stats(path)
        return mu, sigma, path, True
    mu, sigma, n = fid.compute_stats(images, extractor)
    fid.save_stats(path, mu, sigma, count=n, preprocessing=preprocessing)
    return mu, sigma, path, False


def evaluate_bundle(
    pipeline,
    source,
    *,
    per_task: int,
    seed: int = 0,
    decoders: Sequence[str] = ("rolling",),
    sampling=None,
    use_fid: bool = True,
    dataset: str = "omni_shapes",
    stats_cache: str | None = None,
    clip_weights: str | None = None,
    preprocessing: str = "stylegan3",
    batch_size: int = 50,
    inception_weights: str | None = None,
    progress: bool = False,
    episodes: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[dict[str, Any]]]:
    """(report, {decoder: images}, records) for the bundle's `pipeline` on `source`;
    with `episodes`, also that many chained 3-turn edit episodes (`chained_episodes`)."""
    from omni_img.evals import images as image_lib
    from omni_img.evals.generation import judge_records
    from omni_img.sampling.ar import DEFAULT_SAMPLING
    from omni_img.sampling.pipeline import check_decoder

    sampling = sampling or DEFAULT_SAMPLING
    for decoder in decoders:
        check_decoder(decoder)
    records, notes = select_records(
        source,
        per_task,
        pipeline.image_size,
        pipeline.generator.cfg.use_source,
        prompt_fits(pipeline),
    )
    if not 0 <= seed <= 2**32 - len(records):
        raise UserError(f"--seed must lie in [0, 2**32 - {len(records)}] (seed + record index)")
    tasks = [reading.text(r["task"]) for r in records]
    report: dict[str, Any] = {
        "dataset": dataset,
        "per_task": per_task,
        "num_records": len(records),
        "records_per_task": {t: tasks.count(t) for t in sorted(set(tasks))},
        "seed": seed,
        "sampling": dataclasses.asdict(sampling),
        "image_size": list(pipeline.image_size),
        "notes": notes,
        "decoders": {},
    }
    made = generate(
        pipeline, records, seed=seed, decoders=decoders, sampling=sampling, progress=progress
    )
    for decoder in decoders:
        summary, _ = judge_records(made[decoder], records)
        report["decoders"][decoder] = {"judge": summary}

    if episodes:
        report["episodes"] = chained_episodes(
            pipeline, source, count=episodes, seed=seed, decoder=decoders[0], sampling=sampling
        )

    truth = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    recon = reconstruct(pipeline, truth)
    report["tokenizer"] = {"psnr": float(np.mean(np.minimum(image_lib.psnr(truth, recon), 100.0)))}

    why_not = "--no_fid" if not use_fid else fid_available(inception_weights)
    if why_not:
        report["fid"] = {"skipped": why_not}
    else:
        from omni_img.evals.metrics import fid, weights

        path = weights.fid_weights_path(inception_weights)
        extractor = fid.FeatureExtractor(
            weights.load_fid_params(inception_weights), preprocessing, batch_size
        )
        cache = stats_cache or os.path.join(weights.cache_dir(), "fid_stats")
        mu, sigma, stats_file, was_cached = reference_stats(
            truth, extractor, cache=cache, dataset=dataset, preprocessing=preprocessing,
            weights=path,
        )  # fmt: skip
        report["fid"] = {
            "preprocessing": preprocessing,
            "num_reference_images": len(truth),
            "reference_stats": os.path.basename(stats_file),
            "reference_stats_cached": was_cached,
        }
        for decoder in decoders:
            m, s, _ = fid.compute_stats(made[decoder], extractor)
            report["decoders"][decoder]["fid"] = fid.frechet_distance(m, s, mu, sigma)
        m, s, _ = fid.compute_stats(recon, extractor)
        report["tokenizer"]["rfid"] = fid.frechet_distance(m, s, mu, sigma)

    if clip_weights:
        from omni_img.evals.metrics import clip_score, clip_tokenizer, weights

        config, params = weights.load_clip(clip_weights)
        scorer = clip_score.CLIPScorer(
            config, params, clip_tokenizer.CLIPTokenizer(weights.clip_vocab_path(None))
        )
        t2i = [i for i, t in enumerate(tasks) if t != "edit"]
        prompts = [reading.text(records[i]["caption"]) for i in t2i]
        report["clip"] = {
            "weights": os.path.basename(os.path.normpath(clip_weights)),
            "num_images": len(t2i),
            "note": "text-to-image records only (an edit instruction does not describe its image)",
        }
        for decoder in decoders:
            pairs = scorer.pair_scores([made[decoder][i] for i in t2i], prompts) if t2i else []
            report["decoders"][decoder]["clip_score"] = (
                clip_score.clip_score_from_pairs(pairs) if t2i else None
            )
    return report, made, records


# ---------------------------------------------------------------------------------------
# Report


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_bundle_report(report: Mapping[str, Any]) -> str:
    """The report as markdown: a header, notes, and one table with a column per decoder."""
    decoders = list(report["decoders"])
    per = report["decoders"]
    rows: list[tuple[str, list[Any]]] = []

    def judge(decoder) -> dict[str, Any]:
        return per[decoder]["judge"]

    def row(name: str, get) -> None:
        values = []
        for decoder in decoders:
            try:
                values.append(get(decoder))
            except (KeyError, TypeError):
                values.append(None)
        if any(v is not None for v in values):
            rows.append((name, values))

    row("judge accuracy", lambda d: judge(d)["accuracy"])
    first = judge(decoders[0])
    for task in first.get("tasks", {}):
        row(f"judge: {task}", lambda d, t=task: judge(d)["tasks"][t]["accuracy"])
    for name in first.get("geneval", {}):
        row(f"GenEval: {name}", lambda d, n=name: judge(d)["geneval"][n])
    for name in first.get("compose_attributes", {}):
        row(f"compose: {name}", lambda d, n=name: judge(d)["compose_attributes"][n])
    for key in ("compose_by_count", "compose_by_pairs"):
        for group in first.get(key, {}):
            row(f"compose: {group.replace('_', ' ')}",
                lambda d, k=key, g=group: judge(d)[k][g]["accuracy"])  # fmt: skip
    row("OCR exact match", lambda d: judge(d)["write_ocr"]["exact_match"])
    row("OCR CER", lambda d: judge(d)["write_ocr"]["cer"])
    for op in first.get("edit_ops", {}):
        row(f"edit: {op}", lambda d, o=op: judge(d)["edit_ops"][o])
    row(f"FID ({report['fid'].get('preprocessing', '')})", lambda d: per[d]["fid"])
    row("CLIP score", lambda d: per[d]["clip_score"])
    head = [
        f"dataset {report['dataset']} (test), {report['num_records']} records "
        f"({', '.join(f'{t} {n}' for t, n in report['records_per_task'].items())}), "
        f"seed {report['seed']}, {report['image_size'][1]}x{report['image_size'][0]} px",
    ]
    if "bundle_id" in report:
        head.insert(0, f"bundle {report['bundle_id']}")
    tok = report["tokenizer"]
    tok_line = f"tokenizer (encode + conv decode of the ground truth): PSNR {tok['psnr']:.2f} dB"
    if "rfid" in tok:
        tok_line += f", rFID {tok['rfid']:.3f}"
    lines = [*(f"- {h}" for h in head), f"- {tok_line}"]
    if "skipped" in report["fid"]:
        lines.append(f"- FID skipped: {report['fid']['skipped']}")
    lines += [f"- note: {n}" for n in report.get("notes", [])]
    if report.get("episodes", {}).get("episodes"):
        chained = report["episodes"]
        turns = ", ".join(f"{100 * t['accuracy']:.0f} %" for t in chained["per_turn"])
        lines.append(
            f"- chained 3-turn edit episodes ({decoders[0]} decoder, n={chained['episodes']}): "
            f"every turn right {100 * chained['episode_accuracy']:.0f} %; by turn {turns}"
        )
    lines += ["", "| metric | " + " | ".join(decoders) + " |", "|---" * (len(decoders) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(map(_fmt, values)) + " |" for name, values in rows]
    return "\n".join(lines)


def write_bundle_report(
    report: Mapping[str, Any], out_dir: str, made: Mapping[str, np.ndarray], records
) -> list[str]:
    """report.json, report.md and samples_<task>_<decoder>.png in `out_dir`; their names."""
    from omni_img.evals.images import save_grid

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=lambda x: getattr(x, "item", str)(x))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("# omni-img evaluation of a bundle\n\n" + markdown_bundle_report(report) + "\n")
    written = ["report.json", "report.md"]
    tasks = np.asarray([reading.text(r["task"]) for r in records])
    for decoder, images in made.items():
        for task in sorted(set(tasks)):
            name = f"samples_{task}_{decoder}.png"
            save_grid(_upscale(images[tasks == task][:32]), os.path.join(out_dir, name))
            written.append(name)
    return written


def _upscale(images: np.ndarray, at_least: int = 64) -> np.ndarray:
    """Small images repeated up (nearest) so a grid of them can be looked at."""
    factor = max(1, -(-at_least // images.shape[1]))
    return images.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else images
