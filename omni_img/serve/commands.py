"""`omni-img serve`: load a bundle once, compile once, serve many requests over HTTP.

    omni-img serve --bundle runs/omni_tiny/bundle [--host 127.0.0.1] [--port 8000]

Binds to the loopback address unless told otherwise; another address needs an API key
(``--api_key``, or the OMNI_IMG_API_KEY environment variable) unless ``--no_api_key``
says that whoever can reach the port may use it. See docs/serve.md.
"""

from __future__ import annotations

import argparse
import os

from omni_img.provenance.arguments import add_signing_arguments
from omni_img.serve.limits import Limits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument("--bundle", required=True, help="directory written by omni-img export")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", help="required in requests (default $OMNI_IMG_API_KEY)")
    parser.add_argument(
        "--no_api_key", action="store_true", help="allow a non-loopback --host without a key"
    )
    parser.add_argument("--queue", type=int, default=defaults.queue_size,
                        help="generate requests that may wait (then 503)")  # fmt: skip
    parser.add_argument("--max_open_requests", type=int,
                        help="HTTP requests in progress, then a JSON 503 (default --queue + 64)")
    parser.add_argument("--max_batch", type=int, default=defaults.max_batch,
                        help="generate requests with the same settings sampled together "
                        "(1 turns batching off)")  # fmt: skip
    parser.add_argument("--batch_window_ms", type=float, default=defaults.batch_window_s * 1000,
                        help="how long a batch waits for more requests to join")  # fmt: skip
    parser.add_argument("--max_sessions", type=int, default=defaults.max_sessions)
    parser.add_argument("--session_max_age", type=float, default=defaults.session_max_age_s,
                        help="seconds a session may stay unused")  # fmt: skip
    parser.add_argument("--max_body_mb", type=float, default=defaults.max_body_bytes / 2**20)
    parser.add_argument("--max_upload_pixels", type=int, default=defaults.max_upload_pixels)
    add_signing_arguments(parser, "leave prompts out of the PNGs' text chunks and C2PA manifests")
    parser.add_argument("--no_warmup", action="store_true", help="compile on the first request")
    parser.add_argument("--access_log", action="store_true")


def limits_from(args: argparse.Namespace) -> Limits:
    from omni_img.errors import UserError

    limits = Limits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_upload_pixels=args.max_upload_pixels,
        queue_size=args.queue,
        max_open_requests=args.max_open_requests or args.queue + 64,
        max_batch=args.max_batch,
        batch_window_s=args.batch_window_ms / 1000,
        max_sessions=args.max_sessions,
        session_max_age_s=args.session_max_age,
    )
    for name, value in limits.as_dict().items():
        if name == "batch_window_s" and value < 0:
            raise UserError(f"--batch_window_ms must be >= 0, got {value * 1000}")
        if name != "batch_window_s" and not value > 0:
            raise UserError(f"{name} must be > 0, got {value}")
    if limits.max_open_requests <= limits.queue_size:
        raise UserError(
            f"--max_open_requests ({limits.max_open_requests}) must exceed --queue "
            f"({limits.queue_size}), or a full queue would be refused before it fills"
        )
    return limits


def api_key_for(args: argparse.Namespace) -> str | None:
    """The key requests need, or None; refuses an open non-loopback bind."""
    from omni_img.errors import UserError
    from omni_img.serve.running import LOOPBACK

    key = args.api_key or os.environ.get("OMNI_IMG_API_KEY") or None
    if key is None and args.host not in LOOPBACK and not args.no_api_key:
        raise UserError(
            f"--host {args.host} is reachable from other machines: set --api_key (or "
            "OMNI_IMG_API_KEY), or pass --no_api_key to serve without one"
        )
    return key


def warm_up(pipeline, max_batch: int = 1) -> float:
    """Compile the default decoder's two paths (whole image, streamed) before serving:
    the batched ones (padded to ``max_batch``) when batching is on."""
    import time

    from omni_img.sampling import batched
    from omni_img.sampling.ar import DEFAULT_SAMPLING

    start = time.perf_counter()
    if max_batch > 1:
        cond = [pipeline.conditioning("warm up")]
        batched.generate_many(pipeline, cond, [0], DEFAULT_SAMPLING, "rolling", max_batch)
        for _ in batched.stream_many(pipeline, cond, [0], DEFAULT_SAMPLING, "rolling", max_batch):
            pass
    else:
        pipeline.generate("warm up", seed=0)
        for _ in pipeline.stream("warm up", seed=0):
            pass
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> int:
    import time

    from omni_img.errors import UserError

    if not 0 <= args.port < 65536:
        raise UserError(f"--port must lie in [0, 65535], got {args.port}")
    limits = limits_from(args)
    api_key = api_key_for(args)
    from omni_img import compilation
    from omni_img.export.bundle import load_bundle
    from omni_img.provenance.stamp import Stamper
    from omni_img.serve.app import create_app
    from omni_img.serve.running import uvicorn_config

    stamper = Stamper.from_paths(args.c2pa_cert, args.c2pa_key, not args.no_prompt_in_provenance)
    start = time.perf_counter()
    compilation.enable_persistent_cache()
    bundle = load_bundle(args.bundle)
    print(
        f"loaded bundle {bundle.bundle_id[:16]} in {time.perf_counter() - start:.1f} s", flush=True
    )
    if not args.no_warmup:
        print(f"compiled in {warm_up(bundle.pipeline, limits.max_batch):.1f} s", flush=True)
    app = create_app(bundle, stamper, limits, api_key)
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, args.host, args.port, args.access_log))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving on http://{host}:{args.port} (C2PA: {stamper.credentials.trust_note}; "
          f"API key {'required' if api_key else 'off'}); Ctrl-C stops", flush=True)  # fmt: skip
    server.run()
    return 0
