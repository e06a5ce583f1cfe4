"""`omni-img export`: a trained run -> an inference bundle (see omni_img.export.bundle).

    omni-img export --workdir runs/omni_tiny --out runs/omni_tiny/bundle [--dtype bfloat16]

RUN is a rolling-decoder workdir (its config names the generator and tokenizer
workdirs), or a directory holding tokenizer/, generator/ and rolling/ stage workdirs.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        required=True,
        metavar="RUN",
        help="rolling-decoder workdir, or a directory with tokenizer/, generator/, rolling/",
    )
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory")
    parser.add_argument(
        "--dtype", default="float32", help="stored parameter dtype: float32 (default) or bfloat16"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")


def main(args: argparse.Namespace) -> int:
    import time

    from omni_img.export.bundle import export_bundle, resolve_run

    start = time.perf_counter()
    rolling, generator, tokenizer = resolve_run(args.workdir)
    manifest = export_bundle(
        rolling,
        args.out,
        args.dtype,
        generator_workdir=generator,
        tokenizer_workdir=tokenizer,
        force=args.force,
    )
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    print(
        f"exported {args.out}: {len(manifest['files'])} files, {total / 1e6:.2f} MB, "
        f"{manifest['dtype']}, bundle {manifest['bundle_id'][:16]} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0
