"""`omni-img eval`: FID, FID reference statistics, CLIP score, weights, image reports.

    omni-img eval fetch-weights
    omni-img eval fid-stats --images DIR --out STATS.npz
    omni-img eval fid --images DIR --ref STATS.npz          (or --ref DIR of images)
    omni-img eval images --images DIR [--ref STATS.npz] [--clip-weights HF_DIR] --out DIR
    omni-img eval bundle --bundle B --out DIR [--per_task N] [--decoder conv rolling] [--no_fid]
    omni-img eval prompt-use --generator DIR [--split validation] [--records 600]

`evaluate_images` is the library entry point behind `eval images`: it takes images (and
optionally their prompts, specs and tasks) from anywhere — a folder, or a bundle's
generations — and returns the report as a dict; `write_report` writes JSON, markdown and
a sample grid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from omni_img.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL", required=True)

    fetch = sub.add_parser("fetch-weights", help="download, verify and cache the FID weights")
    fetch.add_argument("--cache", help="cache directory (default: $OMNI_IMG_CACHE or ~/.cache)")

    def fid_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--images", required=True, help="folder of images (searched recursively)")
        p.add_argument(
            "--preprocessing",
            default="stylegan3",
            choices=["stylegan3", "pytorch_fid", "clean_fid"],
            help="which reference's resize/scaling to match (default: stylegan3)",
        )
        p.add_argument("--batch-size", type=int, default=50)
        p.add_argument("--limit", type=int, help="use at most this many images")
        p.add_argument("--inception-weights", help="TorchScript .pt or pytorch-fid .pth file")

    stats = sub.add_parser("fid-stats", help="write FID reference statistics (mu, sigma)")
    fid_options(stats)
    stats.add_argument("--out", required=True, help="output .npz with mu and sigma")

    fid = sub.add_parser("fid", help="FID of a folder against reference statistics")
    fid_options(fid)
    fid.add_argument("--ref", required=True, help=".npz with mu/sigma, or a folder of images")

    images = sub.add_parser("images", help="report (FID, CLIP score) for a folder of images")
    fid_options(images)
    images.add_argument("--ref", help="FID reference: .npz with mu/sigma or a folder")
    images.add_argument("--clip-weights", help="Hugging Face CLIPModel folder (safetensors)")
    images.add_argument(
        "--captions",
        help="JSONL of {file, caption} for CLIP score (default: a .txt beside each image)",
    )
    images.add_argument("--out", required=True, help="report folder")

    bundle = sub.add_parser(
        "bundle", help="generate from the test split's prompts with a bundle and report"
    )
    bundle.add_argument("--bundle", required=True, help="directory written by omni-img export")
    bundle.add_argument("--out", required=True, help="report folder")
    bundle.add_argument("--per_task", type=int, default=32, help="records per task (default 32)")
    bundle.add_argument("--seed", type=int, default=0, help="record i is generated with seed+i")
    bundle.add_argument(
        "--episodes", type=int, default=16, help="chained 3-turn edit episodes (0 = none)"
    )
    bundle.add_argument(
        "--decoder",
        nargs="+",
        default=["rolling"],
        help="one or more of rolling (default), sequential, conv",
    )
    bundle.add_argument("--dataset", default="omni_shapes", help="test split of this dataset")
    bundle.add_argument("--data_dir", help="TFDS data dir (default $TFDS_DATA_DIR or ~/...)")
    bundle.add_argument("--clip_weights", help="Hugging Face CLIPModel folder (safetensors)")
    bundle.add_argument("--no_fid", action="store_true", help="skip FID and rFID")
    bundle.add_argument("--stats_cache", help="FID reference stats folder (default: the cache)")
    bundle.add_argument(
        "--preprocessing", default="stylegan3", choices=["stylegan3", "pytorch_fid", "clean_fid"]
    )
    bundle.add_argument("--batch-size", type=int, default=50, help="FID batch size")
    bundle.add_argument("--inception-weights", help="TorchScript .pt or pytorch-fid .pth file")
    bundle.add_argument("--cfg_scale", type=float, default=1.0, help="1 = no guidance")
    bundle.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    bundle.add_argument("--top_k", type=int, default=0, help="0 = off")
    bundle.add_argument("--top_p", type=float, default=1.0, help="1 = off")

    use = sub.add_parser(
        "prompt-use",
        help="word-swap test: how much a generator's NLL depends on the shape/colour word",
    )
    use.add_argument("--generator", required=True, help="workdir of a trained generator")
    use.add_argument("--split", default="validation", help="tokenized split to read")
    use.add_argument("--records", type=int, default=600, help="first N records of the split")
    use.add_argument("--step", type=int, default=None, help="a saved step (default: the latest)")


def main(args: argparse.Namespace) -> int:
    if args.eval_command == "fetch-weights":
        from omni_img.evals.metrics import weights

        for item in (weights.FID_TORCHSCRIPT, weights.CLIP_BPE_VOCAB):
            print(weights.fetch(item, args.cache))
        return 0
    if args.eval_command == "prompt-use":
        return _prompt_use_main(args)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.eval_command == "bundle":
        return _bundle_main(args)
    if args.eval_command == "fid-stats":
        mu, sigma, n = _folder_stats(args.images, args)
        from omni_img.evals.metrics import fid

        fid.save_stats(args.out, mu, sigma, count=n, preprocessing=args.preprocessing)
        print(f"wrote {args.out}: FID statistics of {n} images ({args.preprocessing})")
        return 0
    if args.eval_command == "fid":
        from omni_img.evals.metrics import fid

        ref = _reference_stats(args.ref, args)
        mu, sigma, n = _folder_stats(args.images, args)
        value = fid.frechet_distance(mu, sigma, *ref)
        print(f"FID {value:.4f}  ({n} images, preprocessing {args.preprocessing})")
        return 0
    if args.eval_command == "images":
        paths = list_images(args.images, args.limit)
        images = [read_image(p) for p in paths]
        captions = _captions(paths, args.captions) if args.clip_weights else None
        report = evaluate_images(
            images,
            prompts=captions,
            fid_ref=_reference_stats(args.ref, args) if args.ref else None,
            clip_weights=args.clip_weights,
            preprocessing=args.preprocessing,
            batch_size=args.batch_size,
            inception_weights=args.inception_weights,
        )
        report["source"] = args.images
        write_report(report, args.out, images)
        print(markdown_report(report))
        print(f"wrote {args.out}/report.json, report.md, samples.png")
        return 0
    raise UserError(f"unknown eval command {args.eval_command}")


def _prompt_use_main(args: argparse.Namespace) -> int:
    if args.records < 1:
        raise UserError(f"--records must be at least 1, got {args.records}")
    from omni_img.data.tokenized import TokenizedSource
    from omni_img.evals import prompt_use
    from omni_img.stages import generator

    config, model, params, text_tokenizer = generator.load_workdir(args.generator, args.step)
    source = TokenizedSource(config.data.tokenized_dir, args.split)
    records = [source[i] for i in range(min(args.records, len(source)))]
    try:
        report = prompt_use.word_reliance(model, params, text_tokenizer, records)
        report["encoder_probe_accuracy"] = prompt_use.encoder_probe(
            model, params, text_tokenizer, records
        )
    except ValueError as error:
        raise UserError(f"{args.generator} ({args.split}): {error}") from None
    print(json.dumps(report, indent=2))
    return 0


def _bundle_main(args: argparse.Namespace) -> int:
    if args.per_task < 1:
        raise UserError(f"--per_task must be at least 1, got {args.per_task}")
    if args.episodes < 0:
        raise UserError(f"--episodes must be at least 0, got {args.episodes}")
    from omni_img.data import reading
    from omni_img.evals import bundle_eval
    from omni_img.export.bundle import load_bundle
    from omni_img.export.generate import sampling_config
    from omni_img.sampling.pipeline import check_decoder

    for decoder in args.decoder:
        check_decoder(decoder)
    sampling = sampling_config(args)
    bundle = load_bundle(args.bundle)
    source = reading.source(args.dataset, "test", args.data_dir)
    report, made, records = bundle_eval.evaluate_bundle(
        bundle.pipeline,
        source,
        per_task=args.per_task,
        seed=args.seed,
        decoders=tuple(dict.fromkeys(args.decoder)),
        sampling=sampling,
        use_fid=not args.no_fid,
        dataset=args.dataset,
        stats_cache=args.stats_cache,
        clip_weights=args.clip_weights,
        preprocessing=args.preprocessing,
        batch_size=args.batch_size,
        inception_weights=args.inception_weights,
        progress=sys.stderr.isatty(),
        episodes=args.episodes,
    )
    report = {"bundle": os.path.basename(os.path.normpath(args.bundle)),
              "bundle_id": bundle.bundle_id, **report}  # fmt: skip
    written = bundle_eval.write_bundle_report(report, args.out, made, records)
    print(bundle_eval.markdown_bundle_report(report))
    print(f"wrote {args.out}: {', '.join(written)}")
    return 0


# ---------------------------------------------------------------------------------------
# Library entry point


def evaluate_images(
    images: Sequence[np.ndarray],
    prompts: Sequence[str] | None = None,
    specs: Sequence[Any] | None = None,
    tasks: Sequence[str] | None = None,
    *,
    fid_ref: tuple[np.ndarray, np.ndarray] | None = None,
    clip_weights: str | None = None,
    clip_vocab: str | None = None,
    preprocessing: str = "stylegan3",
    batch_size: int = 50,
    inception_weights: str | None = None,
    judge: Callable[..., dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Metrics of generated images, as a JSON-ready dict.

    images: uint8 RGB (H, W, 3) arrays. prompts: one per image (CLIP score needs them and
    `clip_weights`). fid_ref: (mu, sigma) of the reference set. specs/tasks + judge: a
    callable `judge(images, specs, tasks) -> dict` (e.g. prompt-following accuracy),
    whose result is stored under "judge".
    """
    report: dict[str, Any] = {"num_images": len(images)}
    if not len(images):
        raise UserError("no images to evaluate")
    if fid_ref is not None:
        from omni_img.evals.metrics import fid, weights

        extractor = fid.FeatureExtractor(
            weights.load_fid_params(inception_weights), preprocessing, batch_size
        )
        mu, sigma, n = fid.compute_stats(images, extractor)
        report["fid"] = {
            "value": fid.frechet_distance(mu, sigma, *fid_ref),
            "preprocessing": preprocessing,
            "num_images": n,
        }
    if clip_weights:
        if prompts is None or len(prompts) != len(images):
            raise UserError("CLIP score needs one prompt per image")
        from omni_img.evals.metrics import clip_score, clip_tokenizer, weights

        config, params = weights.load_clip(clip_weights)
        tokenizer = clip_tokenizer.CLIPTokenizer(weights.clip_vocab_path(clip_vocab))
        scorer = clip_score.CLIPScorer(config, params, tokenizer)
        pairs = scorer.pair_scores(list(images), list(prompts))
        report["clip_score"] = {
            "value": clip_score.clip_score_from_pairs(pairs),
            "per_pair_std": float(np.std(pairs)),
            "weights": os.path.basename(os.path.normpath(clip_weights)),
        }
    if judge is not None and specs is not None:
        report["judge"] = judge(images, specs, tasks)
    return report


def markdown_report(report: dict[str, Any]) -> str:
    rows = [("images", str(report["num_images"]))]
    if "fid" in report:
        f = report["fid"]
        rows.append((f"FID ({f['preprocessing']})", f"{f['value']:.4f}"))
    if "clip_score" in report:
        rows.append(("CLIP score", f"{report['clip_score']['value']:.3f}"))
    judge = report.get("judge") or {}
    if "accuracy" in judge:
        rows.append(("judge accuracy", f"{judge['accuracy']:.3f}"))
    for task, value in (judge.get("tasks") or {}).items():
        rows.append((f"judge accuracy: {task}", f"{value['accuracy']:.3f}"))
    if "write_ocr" in judge:
        ocr = judge["write_ocr"]
        rows.append(("OCR read (write images past the background and sign checks)",
                     f"{ocr['read']} of {ocr['of']}"))  # fmt: skip
        if ocr["read"]:
            rows.append(("OCR exact match", f"{ocr['exact_match']:.3f}"))
            rows.append(("OCR CER", f"{ocr['cer']:.3f}"))
    lines = ["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str, images: Sequence[np.ndarray]) -> None:
    """`out_dir/report.json`, `report.md` and `samples.png` (up to 16 images, 128 px)."""
    from PIL import Image

    from omni_img.evals.images import save_grid

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=lambda x: getattr(x, "item", str)(x))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("# omni-img evaluation\n\n" + markdown_report(report) + "\n")
    thumbs = [
        np.asarray(Image.fromarray(np.asarray(im)).resize((128, 128), Image.BICUBIC))
        for im in list(images)[:16]
    ]
    save_grid(np.stack(thumbs), os.path.join(out_dir, "samples.png"), columns=4)


# ---------------------------------------------------------------------------------------
# Folders


def list_images(folder: str, limit: int | None = None) -> list[str]:
    """Image files under `folder`, recursively, in sorted order (at most `limit`)."""
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return paths[:limit] if limit else paths


def read_image(path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3); transparency is dropped (not composited), as pytorch-fid does."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None


def _folder_stats(folder: str, args: argparse.Namespace):
    from omni_img.evals.metrics import fid, weights

    paths = list_images(folder, args.limit)
    params = weights.load_fid_params(args.inception_weights)
    extractor = fid.FeatureExtractor(params, args.preprocessing, args.batch_size)
    return fid.compute_stats(
        (read_image(p) for p in paths), extractor, progress=sys.stderr.isatty()
    )


def _reference_stats(ref: str, args: argparse.Namespace):
    from omni_img.evals.metrics import fid

    if os.path.isdir(ref):
        mu, sigma, _ = _folder_stats(ref, args)
        return mu, sigma
    return fid.load_stats(ref)


def _captions(paths: list[str], captions_file: str | None) -> list[str]:
    if captions_file:
        by_name = {}
        with open(captions_file) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                        by_name[os.path.basename(row["file"])] = row["caption"]
                    except (ValueError, KeyError, TypeError):
                        raise UserError(
                            f"{captions_file}:{number}: expected {{'file': ..., 'caption': ...}}"
                        ) from None
        missing = [p for p in paths if os.path.basename(p) not in by_name]
        if missing:
            raise UserError(f"{captions_file} has no caption for {missing[0]}")
        return [by_name[os.path.basename(p)] for p in paths]
    captions = []
    for path in paths:
        sidecar = os.path.splitext(path)[0] + ".txt"
        if not os.path.isfile(sidecar):
            raise UserError(f"no caption for {path}: give --captions or a .txt beside it")
        with open(sidecar) as f:
            captions.append(f.read().strip())
    return captions
