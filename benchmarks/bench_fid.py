"""FID feature extraction speed: Inception pool_3 images/s at batch 50, JAX on 1 and 8
(fake CPU) devices, and the torch reference network in the same run if torch is installed.

    python benchmarks/bench_fid.py [--batch 50] [--size 256] [--repeats 3] [--no-torch]

Each configuration runs in its own process, since the device count is fixed when jax is
imported (XLA_FLAGS). Input: uint8 images of --size px, so the time includes the resize to
299 (StyleGAN3's TF-style bilinear), as `omni-img eval fid` runs it. Uses the real weights
if cached (`omni-img eval fetch-weights`), random ones otherwise: the speed is the same.
The torch figure is the TorchScript network alone on 299x299 input (resize not counted).
Figures are medians of --repeats timed batches after one warm-up batch (compilation).
FLOPs per image come from XLA's cost analysis of the compiled network; MFU divides the
achieved FLOP/s by a 2048^2 fp32 matmul measured in the same process.
Prints a table last and writes benchmarks/results/fid.json (machine, versions, commit).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run_jax(args: argparse.Namespace) -> dict:
    import jax
    import numpy as np

    from benchmarks import common
    from omni_img.evals.metrics import fid, inception, weights

    cached = weights.find(weights.FID_TORCHSCRIPT)
    params = weights.load_fid_params(cached) if cached else inception.random_params(0)
    extractor = fid.FeatureExtractor(params, "stylegan3", batch_size=args.batch)
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3))
    images = images.astype(np.uint8)
    seconds = common.median_seconds(lambda: extractor(images), args.repeats)

    x = np.zeros((extractor.batch_size, 299, 299, 3), np.float32)
    compiled = extractor._network.lower(extractor.params, x).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # The cost analysis of an SPMD program counts one device's shard.
    flops_per_image = float(cost.get("flops", 0.0)) * len(jax.devices()) / extractor.batch_size
    peak = common.matmul_peak_flops()
    images_per_s = args.batch / seconds
    return {
        "impl": "jax",
        "devices": len(jax.devices()),
        "batch": args.batch,
        "input_px": args.size,
        "weights": "real" if cached else "random",
        "seconds_per_batch": seconds,
        "images_per_s": images_per_s,
        "gflops_per_image": flops_per_image / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "mfu": images_per_s * flops_per_image / peak,
        "machine": common.machine(),
    }


def run_torch(args: argparse.Namespace) -> dict:
    import statistics
    import time

    import torch

    from omni_img.evals.metrics import weights

    path = weights.find(weights.FID_TORCHSCRIPT)
    if path is None:
        return {"impl": "torch", "skipped": "weights not cached"}
    net = torch.jit.load(path, map_location="cpu").eval()
    x = torch.rand(args.batch, 3, 299, 299) * 2 - 1
    times = []
    with torch.no_grad():
        net(x[:2])  # warm-up (TorchScript profiling run)
        for _ in range(max(1, args.repeats - 1)):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "impl": "torch",
        "devices": 1,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "input_px": 299,
        "seconds_per_batch": seconds,
        "images_per_s": args.batch / seconds,
    }


def child(args: argparse.Namespace, impl: str, devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.setdefault("JAX_PLATFORMS", "cpu")
    command = [sys.executable, __file__, "--child", impl, "--batch", str(args.batch)]
    command += ["--size", str(args.size), "--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"impl": impl, "devices": devices, "error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--quick", action="store_true", help="batch 10, 2 repeats, 1 device")
    parser.add_argument("--json", default="")
    parser.add_argument("--child", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats = 10, 2
    if args.child:
        print(json.dumps(run_jax(args) if args.child == "jax" else run_torch(args)))
        return

    from benchmarks import common

    rows = [child(args, "jax", 1)] + ([] if args.quick else [child(args, "jax", 8)])
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            rows.append(child(args, "torch", 1))
        except ImportError:
            rows.append({"impl": "torch", "skipped": "torch not installed"})
    for row in rows:
        row.pop("machine", None)
    # The machines are shared: the load average says how much the figures are depressed.
    settings = {k: v for k, v in vars(args).items() if k != "json"}  # no local paths
    payload = {"load_average": os.getloadavg(), "args": settings, "runs": rows}
    summary = []
    for r in rows:
        if "images_per_s" not in r:
            summary.append({"row": f"FID features, {r['impl']}", "metric": "images/s",
                            "value": None, "note": r.get("skipped") or r.get("error")})  # fmt: skip
            continue
        note = f"batch {r['batch']}, {r.get('devices', 1)} device(s)"
        if r.get("mfu") is not None:
            note += f", MFU {r['mfu']:.2f}"
        summary.append({"row": f"FID features, {r['impl']}", "metric": "images/s",
                        "value": r["images_per_s"], "note": note})  # fmt: skip
    common.emit("fid", [payload], summary, args.json)


if __name__ == "__main__":
    main()
