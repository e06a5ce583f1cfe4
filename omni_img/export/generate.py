"""`omni-img generate`: prompt (+ source image, + session) -> PNG, from a bundle only.

    omni-img generate --bundle runs/omni_tiny/bundle --prompt "a red circle on the left" \
        --out out.png [--decoder rolling|sequential|conv] [--seed 0] [--stream]
    omni-img generate --bundle B --prompt "make it blue" --image in.png --out edit.png
    omni-img generate --bundle B --prompt "now add a square" --session chat.json --out 2.png

The PNG's text chunks record the provenance: prompt, seed, decoder, sampling settings,
bundle id, omni_img version, and that the image is AI-generated; a signed C2PA manifest
records the same (``omni_img.provenance``), with the key and certificate chain of
``--c2pa_cert``/``--c2pa_key`` or, without them, the machine's local test chain
(untrusted). ``--stream`` rewrites OUT band by band as bands land and prints one line per
band. ``--session FILE`` keeps a multi-turn edit session in FILE (JSON) + FILE's .npz
twin: created if absent, continued and saved back otherwise. Every input problem is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

from omni_img.provenance.arguments import add_signing_arguments

AI_NOTICE = "AI-generated image (omni_img); not a photograph of a real scene"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="directory written by omni-img export")
    parser.add_argument("--prompt", required=True, help="what to draw, or the edit instruction")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--image", help="source image to edit (resized to the bundle's size)")
    parser.add_argument(
        "--session",
        metavar="FILE",
        help="multi-turn session file (.json + .npz), continued and saved",
    )
    parser.add_argument("--decoder", default="rolling", help="rolling (default), sequential, conv")
    parser.add_argument("--stream", action="store_true", help="write and report band by band")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cfg_scale", type=float, default=1.0, help="1 = no guidance")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    add_signing_arguments(parser, "leave the prompt out of the PNG's text chunks and C2PA manifest")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print where the time went: load, tokens, decode, and the compilation within",
    )


# ----------------------------------------------------------------------------- checks


def sampling_config(args: argparse.Namespace):
    """An ar.SamplingConfig from the flags; out-of-range values are UserErrors."""
    from omni_img.errors import UserError
    from omni_img.sampling.ar import SamplingConfig

    if not args.temperature >= 0:
        raise UserError(f"--temperature must be ≥ 0, got {args.temperature}")
    if args.top_k < 0:
        raise UserError(f"--top_k must be ≥ 0, got {args.top_k}")
    if not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top_p must lie in (0, 1], got {args.top_p}")
    if not args.cfg_scale > 0:
        raise UserError(f"--cfg_scale must be > 0, got {args.cfg_scale}")
    return SamplingConfig(args.temperature, args.top_k, args.top_p, args.cfg_scale)


def check_out_path(out: str) -> pathlib.Path:
    """OUT as a path whose directory exists and is writable; UserError otherwise."""
    from omni_img.errors import UserError

    path = pathlib.Path(out)
    if path.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as out.png")
    parent = path.parent if str(path.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise UserError(f"--out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--out {out}: not writable")
    return path


def session_prefix(file: str) -> str:
    """FILE (with or without .json) -> the prefix Session.save / Session.load take."""
    return file[: -len(".json")] if file.endswith(".json") else file


# ----------------------------------------------------------------------------- PNG


def provenance(
    *, prompt: str, seed: int, decoder: str, sampling, manifest: dict[str, Any], **extra: Any
) -> dict[str, str]:
    """The PNG text chunks of a generated image."""
    import dataclasses

    from omni_img import __version__

    text = {
        "prompt": prompt,
        "seed": str(seed),
        "decoder": decoder,
        "sampling": json.dumps(dataclasses.asdict(sampling), sort_keys=True),
        "bundle_id": manifest["bundle_id"],
        "bundle_omni_img_version": manifest.get("omni_img_version", ""),
        "omni_img_version": __version__,
        "Software": f"omni_img {__version__}",
        "ai_generated": "true",
        "Comment": AI_NOTICE,
    }
    text.update({key: str(value) for key, value in extra.items()})
    return text


def write_png(
    path: pathlib.Path, image, text: dict[str, str], stamper=None, source: bytes | None = None
) -> None:
    """Write uint8 (H, W, 3) with text chunks and, given a ``provenance.stamp.Stamper``, a
    signed C2PA manifest (``source``: the edited image's bytes); atomic (temp, rename)."""
    from omni_img.errors import UserError
    from omni_img.provenance.stamp import encode_png

    if stamper is None:
        data = encode_png(image, text)
    else:
        data = stamper.png(image, text, source=source, title=path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


# ----------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> int:
    from omni_img.errors import UserError
    from omni_img.sampling.pipeline import check_decoder, read_image
    from omni_img.text.tokenizer import as_text

    # Everything cheap first, so a typo costs no bundle load.
    decoder = check_decoder(args.decoder)
    prompt = as_text(args.prompt)
    if not prompt.strip():
        raise UserError("prompt is empty")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must lie in [0, 2**32), got {args.seed}")
    sampling = sampling_config(args)
    out = check_out_path(args.out)
    source = read_image(args.image) if args.image else None
    from omni_img.provenance.stamp import Stamper

    stamper = Stamper.from_paths(
        args.c2pa_cert, args.c2pa_key, include_prompt=not args.no_prompt_in_provenance
    )
    source_bytes = pathlib.Path(args.image).read_bytes() if args.image else None

    from omni_img import compilation
    from omni_img.export.bundle import load_bundle
    from omni_img.sampling.session import Session

    start = time.perf_counter()
    cache_dir = compilation.enable_persistent_cache()
    compile_stats = compilation.CompileStats().watch()
    bundle = load_bundle(args.bundle)
    load_seconds = time.perf_counter() - start
    pipeline = bundle.pipeline
    session = None
    if args.session:
        prefix = session_prefix(args.session)
        exists = os.path.exists(prefix + ".json")
        session = Session.load(prefix) if exists else pipeline.new_session()
    extra: dict[str, Any] = {}
    if args.image:
        extra["source_image"] = os.path.basename(args.image)
    if session is not None:
        extra["session_turn"] = len(session.turns) + 1
    text = provenance(
        prompt=prompt,
        seed=args.seed,
        decoder=decoder,
        sampling=sampling,
        manifest=bundle.manifest,
        **extra,
    )
    if args.no_prompt_in_provenance:
        del text["prompt"]
    kwargs = dict(
        seed=args.seed, decoder=decoder, source_image=source, session=session, sampling=sampling
    )
    stage_seconds: dict[str, float] = {}  # tokens, decode (streaming interleaves them)
    if args.stream:
        bands = pipeline.rolling_cfg.num_bands if decoder != "conv" else 1
        for band, image, seconds in pipeline.timed_stream(prompt, **kwargs):
            done = band == bands - 1
            chunks = text if done else {**text, "partial": f"{band + 1}/{bands}"}
            write_png(out, image, chunks, stamper, source_bytes)
            print(f"band {band + 1}/{bands} at {seconds * 1000:.0f} ms -> {out}", flush=True)
    else:
        image = pipeline.generate(prompt, **kwargs, timings=stage_seconds)
        write_png(out, image, text, stamper, source_bytes)
    if session is not None:
        try:
            session.save(prefix)
        except OSError as error:
            raise UserError(f"cannot save session {args.session}: {error.strerror}") from None
    h, w = pipeline.image_size
    print(
        f"wrote {out} ({w}x{h}, {decoder}, seed {args.seed}, bundle "
        f"{bundle.bundle_id[:16]}, {(time.perf_counter() - start) * 1000:.0f} ms; "
        f"C2PA manifest {stamper.credentials.trust_note})"
    )
    if args.verbose:
        stages = "".join(f", {k} {v * 1000:.0f} ms" for k, v in stage_seconds.items())
        print(f"load {load_seconds * 1000:.0f} ms{stages}")
        print(f"compilation, inside the above: {compile_stats.summary()}; cache {cache_dir}")
    return 0
