"""`omni-img serve` under load, on the loopback address only: N concurrent clients for a
fixed time against one server process.

    python benchmarks/bench_serve.py [--bundle BUNDLE] [--clients 4] [--seconds 30]
                                     [--batching both|on|off] [--max_batch 4]

The server runs in this process on 127.0.0.1 (a free port), with the model warmed up
first. Each client loops, for --seconds and at most --max_requests in all, on a streamed
`POST /v1/generate` (the default rolling decoder) and records when the first band and
the final image arrived. Reported: requests/s, p50/p99 latency, the time to the first
band over HTTP against the same figure in process (`Pipeline.timed_stream`, no HTTP, no
PNG, no signing), and that every request was answered (completed, or refused with a 503
+ Retry-After when the queue was full; a client that gets a 503 waits Retry-After).
Without --bundle a random-initialised bundle of the main job's sizes is exported first
(speed does not depend on the weights). ``--batching both`` (the default) runs the load
twice on one loaded, warmed bundle, with micro-batching off (``max_batch`` 1) and on,
and reports the ratios. Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "a red circle on the left"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def one_request(client, seed: int) -> dict:
    """A streamed generate; seconds to the first band and to the end, and the outcome."""
    start = time.perf_counter()
    first_band = None
    body = {"prompt": PROMPT, "seed": seed, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as response:
        if response.status_code != 200:
            response.read()
            retry = float(response.headers.get("retry-after", 0) or 0)
            return {"status": response.status_code, "retry_after": retry,
                    "seconds": time.perf_counter() - start}  # fmt: skip
        completed = False
        for line in response.iter_lines():
            if line.startswith("data:"):
                kind = json.loads(line[5:])["type"]
                if first_band is None and kind.startswith("image_generation."):
                    first_band = time.perf_counter() - start
                completed |= kind == "image_generation.completed"
    return {"status": 200 if completed else -1, "first_band": first_band,
            "seconds": time.perf_counter() - start}  # fmt: skip


def client_loop(url: str, stop_at: float, budget: list[int], out: list, lock) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=300) as client:
        while time.monotonic() < stop_at:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
                seed = budget[0]
            try:
                record = one_request(client, seed)
            except httpx.HTTPError as error:
                record = {"status": 0, "error": type(error).__name__}
            with lock:
                out.append(record)
            if record["status"] == 503:
                time.sleep(min(record["retry_after"], max(0.0, stop_at - time.monotonic())))


def in_process_first_band(pipeline, repeats: int = 3) -> float:
    """Median seconds from the call to the first band, in process (after a warm-up)."""
    times = []
    for seed in range(repeats + 1):
        for _band, _image, seconds in pipeline.timed_stream(PROMPT, seed=seed):
            times.append(seconds)
            break
    return statistics.median(times[1:])


def run_load(app, args) -> dict:
    """N clients against ``app`` on the loopback address for --seconds; the figures."""
    from omni_img.serve.running import background_server

    records: list[dict] = []
    lock = threading.Lock()
    budget = [args.max_requests]
    with background_server(app) as url:
        assert url.startswith("http://127.0.0.1:")  # loopback only
        one_request(__import__("httpx").Client(base_url=url, timeout=300), 0)  # HTTP warm-up
        start = time.monotonic()
        stop_at = start + args.seconds
        threads = [threading.Thread(target=client_loop, args=(url, stop_at, budget, records, lock))
                   for _ in range(args.clients)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
        batches = __import__("httpx").get(url + "/healthz").json()["queue"]["batches"]
    done = [r for r in records if r["status"] == 200]
    refused = [r for r in records if r["status"] == 503]
    unanswered = [r for r in records if r["status"] not in (200, 503)]
    latencies = [r["seconds"] for r in done]
    first_bands = [r["first_band"] for r in done if r["first_band"] is not None]
    return {
        "clients": args.clients, "seconds": elapsed, "requests": len(records),
        "completed": len(done), "refused_503": len(refused), "unanswered": len(unanswered),
        "requests_per_s": len(done) / elapsed, "batches": batches,
        "latency_p50_s": percentile(latencies, 50), "latency_p99_s": percentile(latencies, 99),
        "first_band_http_p50_s": percentile(first_bands, 50),
    }  # fmt: skip


def summary_rows(summary: dict) -> list[dict]:
    tag = f"serve, max_batch {summary['max_batch']}"
    return [
        {"row": tag, "metric": "requests/s", "value": summary["requests_per_s"],
         "note": f"{summary['clients']} clients, {summary['seconds']:.0f} s"},
        {"row": tag, "metric": "latency p50 s", "value": summary["latency_p50_s"]},
        {"row": tag, "metric": "latency p99 s", "value": summary["latency_p99_s"]},
        {"row": tag, "metric": "first band over HTTP s",
         "value": summary["first_band_http_p50_s"]},
        {"row": tag, "metric": "first band in process s",
         "value": summary["first_band_in_process_s"]},
        {"row": tag, "metric": "unanswered", "value": summary["unanswered"],
         "note": f"{summary['refused_503']} refused with 503, {summary['batches']} batches"},
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--bundle", help="bundle directory (default: a random one of the main job's sizes)"
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max_requests", type=int, default=400, help="bound on all clients' requests")
    ap.add_argument("--queue", type=int, default=8, help="the server's queue size")
    ap.add_argument("--batching", choices=("both", "on", "off"), default="both")
    ap.add_argument("--max_batch", type=int, default=4, help="the batch size with batching on")
    ap.add_argument(
        "--json", default="", help="results path (default benchmarks/results/serve.json)"
    )
    args = ap.parse_args()

    from benchmarks.bench_pipeline import random_bundle
    from benchmarks.common import emit
    from omni_img.export.bundle import load_bundle
    from omni_img.provenance.chain import local_chain_credentials
    from omni_img.provenance.stamp import Stamper
    from omni_img.serve.app import create_app
    from omni_img.serve.commands import warm_up
    from omni_img.serve.limits import Limits

    tmp = tempfile.TemporaryDirectory()
    bundle_path = pathlib.Path(args.bundle or pathlib.Path(tmp.name) / "bundle")
    if not args.bundle:
        random_bundle(bundle_path)
    bundle = load_bundle(bundle_path)
    warm_up(bundle.pipeline)  # the unbatched programs, for the in-process figure
    in_process = in_process_first_band(bundle.pipeline)
    stamper = Stamper(local_chain_credentials(pathlib.Path(tmp.name) / "chain"))
    batch_sizes = {"off": [1], "on": [args.max_batch], "both": [1, args.max_batch]}[args.batching]
    summaries, rows = [], []
    for max_batch in batch_sizes:
        limits = Limits(queue_size=args.queue, max_batch=max_batch)
        summary = run_load(create_app(bundle, stamper, limits), args)
        summary |= {"max_batch": max_batch, "first_band_in_process_s": in_process,
                    "image_size": list(bundle.pipeline.image_size)}  # fmt: skip
        summaries.append(summary)
        rows += summary_rows(summary)
    if len(summaries) == 2:
        off, on = summaries
        ratios = {
            "requests_per_s_on_over_off": on["requests_per_s"] / off["requests_per_s"],
            "latency_p50_on_over_off": on["latency_p50_s"] / off["latency_p50_s"],
        }
        on |= ratios
        rows += [{"row": "serve", "metric": name, "value": value} for name, value in ratios.items()]
    unanswered = sum(s["unanswered"] for s in summaries)
    emit("serve", summaries, rows, args.json)
    return 1 if unanswered else 0


if __name__ == "__main__":
    sys.exit(main())
