"""`omni-img tokenize`: write the token grids of a dataset split once, for the generator.

omni-img tokenize --tokenizer runs/tokenizer_tiny --split train --out runs/tokens
omni-img tokenize --tokenizer runs/tokenizer_tiny --dataset omni_shapes/64px_200k \
    --out runs/tokens_200k

The dataset is the tokenizer's own (its config's `data`) unless `--dataset` names another
build of the same resolution.
"""

from __future__ import annotations

import argparse
import pathlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", required=True, help="workdir of a trained tokenizer")
    parser.add_argument("--split", action="append", help="split(s) to tokenize (repeatable)")
    parser.add_argument("--out", required=True, help="directory for the tokenized splits")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument(
        "--dataset", default=None, help="NAME[/CONFIG] to read instead of the tokenizer's own"
    )
    parser.add_argument("--data_dir", default=None, help="with --dataset: where it is built")


def main(args: argparse.Namespace) -> int:
    for split in args.split or ["train", "validation", "test"]:
        metadata = tokenize_split(
            args.tokenizer, split, args.out, args.batch_size, args.dataset, args.data_dir
        )
        print(f"tokenized {split}: {metadata['count']} records, grid {metadata['grid']}")
    return 0


def tokenize_split(
    workdir: str,
    split: str,
    out_dir: str,
    batch_size: int = 256,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Encode every image (and edit source) of `split` to token grids; write them to
    `out_dir` (see omni_img.data.tokenized). Returns the split's metadata.

    ``dataset`` (``name[/config]``, built in ``data_dir``) replaces the tokenizer's own
    dataset; its images must have the resolution the tokenizer was trained on."""
    # Imported here, not at the top: `omni-img --help` imports this module.
    import numpy as np
    from tqdm.auto import tqdm

    from omni_img.data import reading
    from omni_img.data.tokenized import write_split
    from omni_img.errors import UserError
    from omni_img.stages.tokenizer import load_workdir
    from omni_img.training.sources import open_split

    config, model, params = load_workdir(workdir)
    source = reading.source(dataset, split, data_dir) if dataset else open_split(config.data, split)
    resolution = model.spec.image_size
    if len(source) and source[0]["image"].shape[:2] != (resolution, resolution):
        raise UserError(
            f"dataset {dataset or 'of the tokenizer'} has {source[0]['image'].shape[0]} px "
            f"images; tokenizer {workdir} encodes {resolution} px"
        )
    encode = batched_encoder(model, params, batch_size)
    grid = (model.spec.grid_size, model.spec.grid_size)
    targets = np.zeros((len(source), *grid), np.int16)
    sources = np.zeros_like(targets)  # zeros where a record has no edit source
    fields, pending = [], []  # pending: (row, source image) of edits not yet encoded

    def encode_pending(count: int) -> None:
        rows, images = zip(*pending[:count])
        sources[list(rows)] = encode(np.stack(images))
        del pending[:count]

    # One pass over the images; the edit sources (a third of omni_shapes) are encoded in
    # batches of their own, so no batch spends compute on records without one.
    for start in tqdm(range(0, len(source), encode.batch_size), desc=f"tokenize {split}"):
        stop = min(start + encode.batch_size, len(source))
        rows = [source[i] for i in range(start, stop)]
        targets[start:stop] = encode(np.stack([r["image"] for r in rows]))
        for index, row in zip(range(start, stop), rows):
            fields.append(record_fields(row))
            if fields[-1]["has_source"]:
                pending.append((index, row["source_image"]))
        while len(pending) >= encode.batch_size:
            encode_pending(encode.batch_size)
    if pending:
        encode_pending(len(pending))

    def records():
        for target, source_tokens, row_fields in zip(targets, sources, fields):
            yield {"target_tokens": target, "source_tokens": source_tokens, **row_fields}

    return write_split(
        out_dir,
        split,
        records(),
        grid=grid,
        num_codes=model.spec.num_codes,
        extra_metadata={"tokenizer_workdir": str(pathlib.Path(workdir).absolute())},
    )


def record_fields(row) -> dict:
    """What a tokenized record keeps of a dataset row besides its two token grids."""
    from omni_img.data import reading
    from omni_img.data.tokenized import TEXT_FIELDS

    return {
        "has_source": reading.text(row.get("task")) == "edit",
        "index": int(row.get("index", 0)),
        **({"label": int(row["label"])} if "label" in row else {}),
        # every caption of the image (COCO), for the generator to draw from
        **({"captions": reading.text(row["captions"])} if "captions" in row else {}),
        **{field: reading.text(row.get(field, "")) for field in TEXT_FIELDS},
    }


def batched_encoder(model, params, batch_size: int):
    """`encode(images_NxHxWx3) -> tokens_Nxhxw` (int16) for N <= `encode.batch_size`: one
    compiled batch size (`batch_size` rounded up to a multiple of the local devices),
    split over every local device, the last batch padded."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from omni_img.models import tokenizer as tokenizer_model

    devices = jax.local_devices()
    size = -(-batch_size // len(devices)) * len(devices)
    mesh = Mesh(np.asarray(devices), ("batch",))
    images_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    apply = jax.jit(lambda p, x: tokenizer_model.encode(model, p, x))

    def encode(images):
        padded = np.zeros((size, *images.shape[1:]), images.dtype)
        padded[: len(images)] = images
        tokens = apply(replicated, jax.device_put(padded, images_sharding))
        return np.asarray(tokens)[: len(images)].astype(np.int16)

    encode.batch_size = size
    return encode
