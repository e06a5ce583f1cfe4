"""`omni-img data tfds|coco|webdataset|parquet`: convert a dataset to ArrayRecord shards.

omni-img data tfds --dataset imagenet2012 --split train --name imagenet2012_256
omni-img data coco --images val2017 --annotations captions_val2017.json --name coco_256 \
    --split validation
omni-img data webdataset --shards 'laion/*.tar' --name laion_256 --processes 8
omni-img data parquet --files 'data/train-*.parquet' --name hf_256 --caption_column text

Each writes `<data_dir>/<name>/` (omni_img/data/converted.py) over --processes
processes, or over many hosts with --beam (omni_img/data/beam_conversion.py), and a
rerun after an interruption reuses the shards already written.
"""

from __future__ import annotations

import argparse
import re
import time

from omni_img.errors import UserError


def _common(parser: argparse.ArgumentParser, split_help: str) -> None:
    parser.add_argument("--name", required=True, help="name of the converted dataset")
    parser.add_argument("--split", default="train", help=split_help)
    parser.add_argument("--resolution", type=int, default=256, help="side in px (32-512)")
    parser.add_argument("--encoding", default="jpeg", choices=("jpeg", "png", "raw"))
    parser.add_argument("--processes", type=int, default=1, help="conversion processes")
    parser.add_argument("--shard_size", type=int, default=None, help="images per work unit")
    parser.add_argument(
        "--beam", default=None, metavar="OPTIONS",
        help='run on Apache Beam with these pipeline options: --beam="--runner=DataflowRunner ..."',
    )  # fmt: skip
    parser.add_argument(
        "--data_dir", default=None, help="default: $TFDS_DATA_DIR or ~/tensorflow_datasets"
    )


def add_format_parsers(actions) -> None:
    """Register one action per format under `omni-img data`."""
    tfds = actions.add_parser("tfds", help="convert a TFDS image dataset (e.g. imagenet2012)")
    tfds.add_argument("--dataset", required=True, help="TFDS name[/config][:version]")
    tfds.add_argument("--source_data_dir", default=None, help="where the TFDS dataset is built")
    tfds.add_argument("--image_key", default="image")
    tfds.add_argument("--label_key", default="label")
    tfds.add_argument("--caption_template", default="", help='e.g. "a photo of a {label}"')
    _common(tfds, "the TFDS split to convert (also the name it gets)")
    tfds.set_defaults(_data=convert_tfds)

    coco = actions.add_parser("coco", help="convert COCO captions (one record per image)")
    coco.add_argument("--images", required=True, help="folder of the split's images")
    coco.add_argument("--annotations", required=True, help="captions_<split>.json")
    _common(coco, "the split's name here (train, validation)")
    coco.set_defaults(_data=convert_coco)

    web = actions.add_parser("webdataset", help="convert WebDataset / img2dataset tar shards")
    web.add_argument("--shards", required=True, nargs="+", help="tar paths or glob patterns")
    _common(web, "the split's name here (train, validation)")
    web.set_defaults(_data=convert_webdataset)

    parquet = actions.add_parser("parquet", help="convert Parquet image + caption columns")
    parquet.add_argument("--files", required=True, nargs="+", help="paths or glob patterns")
    parquet.add_argument("--image_column", default="image", help="bytes, or {bytes, path}")
    parquet.add_argument("--caption_column", default="text")
    _common(parquet, "the split's name here (train, validation)")
    parquet.set_defaults(_data=convert_parquet)


def _job(args, source: str, units, reader, label_names=()):
    from omni_img.data import converted
    from omni_img.data.conversion import Job
    from omni_img.data.ingest import NAME
    from omni_img.data.reading import default_data_dir

    if not NAME.match(args.name):
        raise UserError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {args.name!r}")
    if not 32 <= args.resolution <= 512 or args.resolution % 4:
        raise UserError(f"resolution must be a multiple of 4 in 32..512, got {args.resolution}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", args.split):
        raise UserError(f"--split must be a plain name (train, validation), got {args.split!r}")
    if not units:
        raise UserError(f"{source}: nothing to convert")
    info = converted.DatasetInfo(args.name, source, args.resolution, args.encoding, label_names)
    directory = converted.dataset_dir(args.data_dir or default_data_dir(), args.name)
    return Job(info, str(directory), args.split, units, reader)


def _run(job, args: argparse.Namespace) -> int:
    from omni_img.data import beam_conversion, conversion

    if args.processes < 1:
        raise UserError(f"--processes must be at least 1, got {args.processes}")
    start = time.perf_counter()
    if args.beam is not None:
        index, reused = beam_conversion.run(job, args.beam)
        where = "on Beam"
    else:
        index, reused = conversion.run(job, args.processes)
        where = f"{args.processes} process{'es' if args.processes > 1 else ''}"
    seconds = time.perf_counter() - start
    print(conversion.summary(index, reused, len(job.units)))
    print(f"wrote {job.info.name} ({job.split}, {job.info.resolution} px) to {job.directory} "
          f"({seconds:.1f} s, {where})")  # fmt: skip
    return 0 if index["count"] else 1


def _shard_size(args, default: int) -> int:
    size = args.shard_size or default
    if size < 1:
        raise UserError(f"--shard_size must be at least 1, got {size}")
    return size


def convert_tfds(args: argparse.Namespace) -> int:
    from omni_img.data.formats import tfds_images

    if args.name == args.dataset.partition("/")[0].partition(":")[0]:
        raise UserError(f"--name {args.name} is the TFDS dataset's own name: choose another")
    units, names = tfds_images.plan(
        args.dataset, args.split, args.source_data_dir, image_key=args.image_key,
        label_key=args.label_key, caption_template=args.caption_template,
        shard_size=_shard_size(args, tfds_images.SHARD_SIZE),
    )  # fmt: skip
    return _run(_job(args, f"tfds:{args.dataset}", units, tfds_images.read, names), args)


def convert_coco(args: argparse.Namespace) -> int:
    from omni_img.data.formats import coco

    units = coco.plan(args.images, args.annotations, _shard_size(args, coco.SHARD_SIZE))
    return _run(_job(args, "coco", units, coco.read), args)


def convert_webdataset(args: argparse.Namespace) -> int:
    from omni_img.data.formats import webdataset

    if args.shard_size is not None:
        raise UserError("a webdataset's work unit is one tar file: drop --shard_size")
    units = webdataset.plan(args.shards)
    return _run(_job(args, "webdataset", units, webdataset.read), args)


def convert_parquet(args: argparse.Namespace) -> int:
    from omni_img.data.formats import parquet

    if args.shard_size is not None:
        raise UserError("a Parquet work unit is one row group: drop --shard_size")
    units = parquet.plan(args.files, args.image_column, args.caption_column)
    return _run(_job(args, "parquet", units, parquet.read), args)
