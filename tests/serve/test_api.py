"""The HTTP API on 127.0.0.1: PNG and streamed generation, the Images API route, sessions,
uploads, status routes, the queue's 503, the API key, and a 4xx one-line JSON error for
every malformed request."""

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from omni_img.serve.errors import RequestError
from omni_img.serve.sessions import SessionStore
from omni_img.serve.worker import DONE, ModelWorker
from tests.support.bundles import PROMPT
from tests.support.http import (
    TEST_LIMITS,
    assert_one_line_error,
    decode_png,
    noise_png,
    png_bytes,
    sse_events,
)


def test_generate_png_matches_the_pipeline(client, bundle):
    response = client.post("/v1/generate", json={"prompt": PROMPT, "seed": 7, "decoder": "conv"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "7" and "untrusted" in response.headers["x-c2pa"]
    with Image.open(io.BytesIO(response.content)) as png:
        pixels, text = np.asarray(png.convert("RGB")), dict(png.text)
    np.testing.assert_array_equal(pixels, bundle.pipeline.generate(PROMPT, seed=7, decoder="conv"))
    assert text["prompt"] == PROMPT and text["bundle_id"] == bundle.bundle_id
    assert text["ai_generated"] == "true"


def test_stream_sends_partial_bands_then_the_image(client, bundle):
    bands = bundle.pipeline.rolling_cfg.num_bands
    response = client.post(
        "/v1/generate", json={"prompt": PROMPT, "seed": 3, "decoder": "sequential", "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    received = sse_events(response.text)
    kinds = [e["type"] for e in received]
    partial, completed = "image_generation.partial_image", "image_generation.completed"
    assert kinds == [partial] * (bands - 1) + [completed]
    assert [e["partial_image_index"] for e in received[:-1]] == list(range(bands - 1))
    h, w = bundle.pipeline.image_size
    assert received[-1]["size"] == f"{w}x{h}" and received[-1]["seed"] == 3
    first = decode_png(received[0]["b64_json"])
    band_rows = bundle.pipeline.rolling_cfg.band_height
    assert (first[band_rows:] == 128).all() and not (first[:band_rows] == 128).all()
    whole = bundle.pipeline.generate(PROMPT, seed=3, decoder="sequential")
    assert np.abs(decode_png(received[-1]["b64_json"]).astype(int) - whole).max() <= 1


def test_images_api_route_speaks_the_images_api(client, bundle):
    h, w = bundle.pipeline.image_size
    body = {"model": "anything", "prompt": PROMPT, "n": 1, "size": f"{w}x{h}", "quality": "high"}
    response = client.post("/v1/images/generations", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert isinstance(data["created"], int) and len(data["data"]) == 1
    assert decode_png(data["data"][0]["b64_json"]).shape == (h, w, 3)
    streamed = client.post(
        "/v1/images/generations", json={"prompt": PROMPT, "stream": True, "partial_images": 2}
    )
    kinds = [e["type"] for e in sse_events(streamed.text)]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    refusals = [({"n": 2}, "n must be 1"), ({"size": "1024x1024"}, "size"),
                ({"response_format": "url"}, "b64_json"), ({"prompt": ""}, "empty")]  # fmt: skip
    for bad, word in refusals:
        message = assert_one_line_error(
            client.post("/v1/images/generations", json={"prompt": PROMPT, **bad}), 400
        )
        assert word in message


def test_session_edits_the_last_image_and_is_listed_and_deleted(client, bundle):
    source = noise_png(1)
    first = client.post(
        "/v1/generate",
        data={"prompt": "make it green", "session": "new", "seed": "1", "decoder": "conv"},
        files={"image": ("photo.png", source, "image/png")},
    )
    assert first.status_code == 200, first.text
    session_id = first.headers["x-session-id"]
    assert first.headers["x-session-turn"] == "1"
    second = client.post(
        "/v1/generate",
        json={"prompt": "now add a square", "session": session_id, "seed": 2, "stream": True},
    )
    completed = sse_events(second.text)[-1]
    assert completed["session_id"] == session_id and completed["turn"] == 2
    listed = client.get(f"/v1/sessions/{session_id}").json()
    assert [t["prompt"] for t in listed["turns"]] == ["make it green", "now add a square"]
    assert listed["started_from_upload"] is True
    assert session_id in [s["id"] for s in client.get("/v1/sessions").json()["sessions"]]
    # The second turn was conditioned on the first: the pipeline agrees.
    pipe = bundle.pipeline
    session = pipe.new_session()
    from omni_img.sampling.pipeline import read_image

    pipe.generate("make it green", seed=1, decoder="conv", session=session,
                  source_image=read_image(io.BytesIO(source)))  # fmt: skip
    expected = pipe.generate("now add a square", seed=2, session=session)
    assert np.abs(decode_png(completed["b64_json"]).astype(int) - expected).max() <= 1
    clash = client.post(
        "/v1/generate",
        data={"prompt": "x", "session": session_id},
        files={"image": ("again.png", source, "image/png")},
    )
    assert "already has an image" in assert_one_line_error(clash, 409)
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
    assert_one_line_error(client.get(f"/v1/sessions/{session_id}"), 404)
    gone = client.post("/v1/generate", json={"prompt": "again", "session": session_id})
    assert "unknown session" in assert_one_line_error(gone, 404)
    created = client.post("/v1/sessions")
    assert created.status_code == 201 and created.json()["turns"] == []


def test_health_and_info(client, bundle):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/v1/info").json()
    assert info["bundle_id"] == bundle.bundle_id
    h, w = bundle.pipeline.image_size
    assert info["image_size"] == {"height": h, "width": w}
    assert info["decoders"] == ["rolling", "sequential", "conv"]
    assert all(count > 0 for count in info["parameters"].values())
    assert info["limits"]["queue_size"] == TEST_LIMITS.queue_size
    page = client.get("/")
    assert page.status_code == 200 and "<script src=\"/app.js\">" in page.text
    assert "partial_image" in client.get("/app.js").text


# ----------------------------------------------------------------------------- bounds


def test_full_queue_answers_503_with_retry_after():
    worker = ModelWorker(queue_size=1)
    release = threading.Event()

    async def scenario():
        loop = asyncio.get_running_loop()
        worker.start()
        running = worker.submit(lambda emit, cancelled: release.wait(10), loop)
        while worker.running == 0:
            await asyncio.sleep(0.01)
        waiting = worker.submit(lambda emit, cancelled: emit(("final", b"", {})), loop)
        with pytest.raises(RequestError) as refused:
            worker.submit(lambda emit, cancelled: None, loop)
        release.set()
        assert await running.events.get() == DONE
        assert (await waiting.events.get())[0] == "final"
        return refused.value

    refused = asyncio.run(scenario())
    worker.stop()
    assert refused.status == 503 and int(refused.headers["Retry-After"]) >= 1


def test_session_store_is_bounded_in_count_and_age(bundle):
    now = [0.0]
    store = SessionStore(max_sessions=2, max_age_s=10.0, clock=lambda: now[0])
    new = lambda: store.create(bundle.pipeline.new_session()).id  # noqa: E731
    a, b = new(), new()
    store.get(a)  # a is now the most recent: b goes first
    c = new()
    assert {s["id"] for s in store.describe_all()} == {a, c}
    now[0] = 11.0
    assert len(store) == 0
    with pytest.raises(RequestError) as missing:
        store.get(b)
    assert missing.value.status == 404


def test_api_key_is_required_when_set(bundle, stamper):
    import httpx

    from omni_img.serve.app import create_app
    from omni_img.serve.running import background_server

    with background_server(create_app(bundle, stamper, TEST_LIMITS, api_key="s3cret")) as url:
        assert httpx.get(url + "/healthz").status_code == 200
        assert_one_line_error(httpx.get(url + "/v1/info"), 401)
        assert_one_line_error(httpx.get(url + "/v1/info", headers={"X-API-Key": "wrong"}), 401)
        assert httpx.get(url + "/v1/info", headers={"Authorization": "Bearer s3cret"}).is_success


def test_non_loopback_bind_needs_a_key(monkeypatch):
    import argparse

    from omni_img.errors import UserError
    from omni_img.serve.commands import api_key_for

    monkeypatch.delenv("OMNI_IMG_API_KEY", raising=False)
    args = argparse.Namespace(host="0.0.0.0", api_key=None, no_api_key=False)
    with pytest.raises(UserError, match="--api_key"):
        api_key_for(args)
    assert api_key_for(argparse.Namespace(host="127.0.0.1", api_key=None, no_api_key=False)) is None


# ----------------------------------------------------------------------------- bad input


def _truncated_png() -> bytes:
    whole = noise_png(2, (32, 32))
    return whole[: len(whole) // 2]


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (16, 16)).save(buffer, "JPEG")
    return buffer.getvalue()


def _upload(data: bytes, **fields):
    return {"data": {"prompt": "edit it", **fields}, "files": {"image": ("in.png", data)}}


MALFORMED = {
    "missing prompt": ({"json": {"seed": 1}}, 400, "prompt is missing"),
    "empty prompt": ({"json": {"prompt": "   "}}, 400, "prompt is empty"),
    "prompt over the context": ({"json": {"prompt": "word " * 400}}, 400, "than the context"),
    "prompt not a string": ({"json": {"prompt": 5}}, 400, "must be a string"),
    "non-UTF-8 JSON": ({"content": b'{"prompt": "\xff\xfe"}',
                        "headers": {"content-type": "application/json"}}, 400, "UTF-8"),
    "non-UTF-8 form prompt": ({"data": {"seed": "1"}, "files": {"prompt": (None, b"\xc3\x28")}},
                              400, "UTF-8"),
    "lone surrogate": ({"content": b'{"prompt": "\\ud800"}',
                        "headers": {"content-type": "application/json"}}, 400, "Unicode"),
    "not JSON": ({"content": b"{prompt", "headers": {"content-type": "application/json"}},
                 400, "not valid JSON"),
    "JSON array": ({"json": [1, 2]}, 400, "JSON object"),
    "empty body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty"),
    "unknown content type": ({"content": b"x", "headers": {"content-type": "text/csv"}},
                             415, "content type"),
    "upload not an image": (_upload(b"not an image at all"), 400, "not an image"),
    "truncated PNG": (_upload(_truncated_png()), 400, "truncated"),
    "CMYK upload": (_upload(_cmyk_jpeg()), 400, "CMYK"),
    "too many pixels": (_upload(png_bytes(np.zeros((600, 600, 3), np.uint8))), 400, "too large"),
    "too small": (_upload(png_bytes(np.zeros((2, 2, 3), np.uint8))), 400, "too small"),
    "bad base64": ({"json": {"prompt": "x", "image": "@@@"}}, 400, "base64"),
    "oversized body": ({"content": b"x" * (TEST_LIMITS.max_body_bytes + 1),
                        "headers": {"content-type": "application/json"}}, 413, "over"),
    "unknown session": ({"json": {"prompt": "x", "session": "nope"}}, 404, "unknown session"),
    "unknown field": ({"json": {"prompt": "x", "temprature": 1}}, 400, "unknown field"),
    "unknown decoder": ({"json": {"prompt": "x", "decoder": "vae"}}, 400, "unknown decoder"),
    "negative temperature": ({"json": {"prompt": "x", "temperature": -1}}, 400, "temperature"),
    "top_p zero": ({"json": {"prompt": "x", "top_p": 0}}, 400, "top_p"),
    "top_k text": ({"data": {"prompt": "x", "top_k": "many"}}, 400, "top_k must be a number"),
    "cfg_scale NaN": ({"content": b'{"prompt": "x", "cfg_scale": NaN}',
                       "headers": {"content-type": "application/json"}}, 400, "finite"),
    "seed too big": ({"json": {"prompt": "x", "seed": 2**40}}, 400, "seed"),
    "seed fractional": ({"json": {"prompt": "x", "seed": 1.5}}, 400, "integer"),
    "stream not a bool": ({"json": {"prompt": "x", "stream": "maybe"}}, 400, "true or false"),
    "partial_images out of range": ({"json": {"prompt": "x", "partial_images": 99}}, 400,
                                    "partial_images"),
    "multipart without boundary": ({"content": b"--x\r\n", "headers": {
        "content-type": "multipart/form-data"}}, 400, "boundary"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_a_one_line_4xx(client, case):
    kwargs, status, words = MALFORMED[case]
    response = client.post("/v1/generate", **kwargs)
    assert words in assert_one_line_error(response, status)


def test_unknown_route_and_method_are_json_4xx(client):
    assert_one_line_error(client.get("/v1/nothing"), 404)
    assert_one_line_error(client.get("/v1/generate"), 405)
