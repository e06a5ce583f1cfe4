"""Micro-batching: concurrent generate requests with the same settings are sampled as one
batch, and each gets the pixels it gets alone with its seed (PNG and streamed bands);
two turns of one session never share a batch. Loopback only, a few requests."""

import asyncio
import dataclasses
import io
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from omni_img.serve.worker import DONE, ModelWorker
from tests.support.bundles import PROMPT
from tests.support.http import TEST_LIMITS, decode_png, sse_events

BATCH_LIMITS = dataclasses.replace(TEST_LIMITS, max_batch=2, batch_window_s=3.0)


@pytest.fixture(scope="module")
def batching_url(bundle, stamper):
    """A server whose batches wait up to 3 s for a second request: two sent together
    always share one batch."""
    from omni_img.serve.app import create_app
    from omni_img.serve.running import background_server

    with background_server(create_app(bundle, stamper, BATCH_LIMITS)) as url:
        yield url


def pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text[:300]
    with Image.open(io.BytesIO(response.content)) as png:
        return np.asarray(png.convert("RGB"))


def together(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """POST every body at once, each from its own thread."""
    responses: list = [None] * len(bodies)

    def send(i):
        responses[i] = httpx.post(url + "/v1/generate", json=bodies[i], timeout=300)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return responses


def batches(url: str) -> int:
    return httpx.get(url + "/healthz").json()["queue"]["batches"]


def test_two_concurrent_requests_get_the_pixels_each_gets_alone(batching_url, bundle):
    bodies = [{"prompt": PROMPT, "seed": 11, "decoder": "conv"},
              {"prompt": "a blue square", "seed": 12, "decoder": "conv"}]  # fmt: skip
    before = batches(batching_url)
    paired = [pixels(r) for r in together(batching_url, bodies)]
    assert batches(batching_url) == before + 1  # the two shared one batch
    alone = [pixels(r) for r in together(batching_url, bodies[:1])] + [
        pixels(r) for r in together(batching_url, bodies[1:])
    ]
    assert batches(batching_url) == before + 1  # each ran by itself
    for got, want in zip(paired, alone):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(paired[0], paired[1])  # different seeds: different images
    for got, body in zip(paired, bodies):  # the pipeline's own image, up to float rounding
        direct = bundle.pipeline.generate(body["prompt"], seed=body["seed"], decoder="conv")
        assert np.abs(got.astype(int) - direct).max() <= 1


def test_streamed_bands_are_batched_and_match_alone(batching_url, bundle):
    bodies = [{"prompt": PROMPT, "seed": s, "decoder": "sequential", "stream": True}
              for s in (21, 22)]  # fmt: skip
    before = batches(batching_url)
    paired = [sse_events(r.text) for r in together(batching_url, bodies)]
    assert batches(batching_url) == before + 1
    alone = [sse_events(together(batching_url, [body])[0].text) for body in bodies]
    bands = bundle.pipeline.rolling_cfg.num_bands
    for got, want in zip(paired, alone):
        assert [e["type"] for e in got] == [e["type"] for e in want]
        assert len(got) == bands  # every band before the last, then the image
        for a, b in zip(got, want):
            np.testing.assert_array_equal(decode_png(a["b64_json"]), decode_png(b["b64_json"]))
    assert paired[0][-1]["seed"] == 21 and paired[1][-1]["seed"] == 22


def test_two_turns_of_one_session_run_one_after_the_other(batching_url):
    created = httpx.post(batching_url + "/v1/sessions").json()["id"]
    before = batches(batching_url)
    body = {"prompt": PROMPT, "session": created, "decoder": "conv"}
    responses = together(batching_url, [body | {"seed": 1}, body | {"seed": 2}])
    assert [r.status_code for r in responses] == [200, 200]
    assert sorted(int(r.headers["x-session-turn"]) for r in responses) == [1, 2]
    assert batches(batching_url) == before  # never one batch
    turns = httpx.get(batching_url + f"/v1/sessions/{created}").json()["turns"]
    assert len(turns) == 2


@dataclasses.dataclass
class FakeRun:
    batch_key: str
    label: str
    session_id: str | None = None


def test_worker_batches_only_matching_keys_up_to_the_maximum():
    ran: list[list[str]] = []
    release = threading.Event()

    def run_batch(jobs):
        release.wait(10)
        ran.append([job.run.label for job in jobs])

    worker = ModelWorker(queue_size=8, max_batch=2, window_s=0.0, run_batch=run_batch)

    async def scenario():
        loop = asyncio.get_running_loop()
        runs = [FakeRun("a", "1"), FakeRun("a", "2"), FakeRun("b", "3"),
                FakeRun("a", "4"), FakeRun("a", "5")]  # fmt: skip
        jobs = [worker.submit(run, loop) for run in runs]
        worker.start()
        release.set()
        for job in jobs:
            assert await job.events.get() == DONE

    asyncio.run(scenario())
    worker.stop()
    assert ran == [["1", "2"], ["3"], ["4", "5"]]
    assert worker.status()["batches"] == 2 and worker.status()["completed"] == 5
