"""`omni-img data`: build the built-in dataset, or ingest your own images and captions.

omni-img data build [--config 64px] [--data_dir DIR]
omni-img data build --resolution 128 --train_examples 5000 [--seed 1]
omni-img data ingest --images DIR --captions FILE.jsonl --name NAME [--resolution 64]
omni-img data tfds|coco|webdataset|parquet ... --name NAME   (see convert_commands.py)
"""

from __future__ import annotations

import argparse
import time

from omni_img.data.convert_commands import add_format_parsers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `build`, `ingest` and the format converters under `omni-img data`."""
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build omni_shapes into ArrayRecord files")
    build.add_argument(
        "--config", default=None, help="preset: 64px (default), 64px_200k, 32px, 128px, 256px, tiny"
    )
    build.add_argument("--resolution", type=int, default=None, help="custom: side in px (32-256)")
    build.add_argument("--train_examples", type=int, default=None, help="custom: train size")
    build.add_argument("--validation_examples", type=int, default=None)
    build.add_argument("--test_examples", type=int, default=None)
    build.add_argument("--seed", type=int, default=0, help="custom: generator seed")
    build.add_argument(
        "--data_dir", default=None, help="default: $TFDS_DATA_DIR or ~/tensorflow_datasets"
    )
    build.set_defaults(_data=_build)

    ingest = actions.add_parser(
        "ingest", help="turn an image folder + captions JSONL into a dataset"
    )
    ingest.add_argument(
        "--images", required=True, help="folder the JSONL's image paths are relative to"
    )
    ingest.add_argument(
        "--captions", required=True, help='JSONL: {"image": "a.jpg", "caption": "..."}'
    )
    ingest.add_argument("--name", required=True, help="dataset name (snake_case)")
    ingest.add_argument("--resolution", type=int, default=64)
    ingest.add_argument("--split", default="train")
    ingest.add_argument("--data_dir", default=None)
    ingest.set_defaults(_data=_ingest)
    add_format_parsers(actions)


def main(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit code."""
    return args._data(args)


def _build(args: argparse.Namespace) -> int:
    from omni_img.data import reading
    from omni_img.errors import UserError

    custom = (args.resolution, args.train_examples, args.validation_examples, args.test_examples)
    if args.config is not None and (any(v is not None for v in custom) or args.seed):
        raise UserError("give either --config or custom sizes (--resolution, --*_examples, --seed)")
    if args.config is not None:
        config = reading.config_named(args.config)
    elif any(v is not None for v in custom) or args.seed:
        config = reading.make_config(args.resolution or 64, *custom[1:], seed=args.seed)
    else:
        config = reading.config_named("64px")
    start = time.perf_counter()
    builder = reading.prepare(config, args.data_dir)
    seconds = time.perf_counter() - start
    sizes = ", ".join(
        f"{s} {builder.info.splits[s].num_examples}" for s in ("train", "validation", "test")
    )
    print(f"omni_shapes/{config.name} ({config.resolution} px): {sizes}")
    print(f"in {builder.data_dir} ({seconds:.1f} s)")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from omni_img.data.ingest import ingest

    report, path = ingest(
        args.images, args.captions, args.name, args.resolution, args.data_dir, args.split
    )
    print(report.summary())
    if path is None:
        print("no usable row: nothing written")
        return 1
    print(f"wrote {args.name} ({args.split}, {args.resolution} px) to {path}")
    return 0
