"""Overload on 127.0.0.1: past the bound on open requests the answer is the one-line JSON
503 with a Retry-After, never uvicorn's plain text; idle connections beyond any count do
not make the server refuse. Bounded: a few requests, a few seconds, no model."""

import socket
import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from omni_img.serve.overload import OpenRequestLimit
from omni_img.serve.running import background_server, uvicorn_config
from tests.support.http import TEST_LIMITS


def blocking_app(release: threading.Event, entered: threading.Semaphore):
    async def slow(request):
        import asyncio

        entered.release()
        while not release.is_set():  # hold the request open, off the loop's thread
            await asyncio.sleep(0.01)
        return PlainTextResponse("done")

    async def quick(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/slow", slow), Route("/quick", quick)])


def test_past_the_open_request_bound_the_answer_is_json_503():
    release, entered = threading.Event(), threading.Semaphore(0)
    app = OpenRequestLimit(blocking_app(release, entered), limit=2, retry_after_s=lambda: 3)
    with background_server(app) as url:
        results = []
        holders = [threading.Thread(target=lambda: results.append(httpx.get(url + "/slow",
                                                                            timeout=20)))
                   for _ in range(2)]  # fmt: skip
        for thread in holders:
            thread.start()
        for _ in holders:
            assert entered.acquire(timeout=10)
        refused = httpx.get(url + "/quick", timeout=10)
        release.set()
        for thread in holders:
            thread.join(timeout=20)
        after = httpx.get(url + "/quick", timeout=10)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["retry-after"] == "3"
    assert refused.text.count("\n") == 1
    error = refused.json()["error"]
    assert error["code"] == 503 and error["type"] == "server_busy"
    assert "retry in 3 s" in error["message"]
    assert [r.text for r in results] == ["done", "done"]
    assert after.text == "ok" and app.refused == 1 and app.open == 0


def test_many_idle_connections_do_not_trigger_a_plain_text_503():
    """uvicorn's own limit would refuse past queue + 64 connections, idle ones included."""
    assert uvicorn_config(None, "127.0.0.1", 0).limit_concurrency is None
    app = OpenRequestLimit(blocking_app(threading.Event(), threading.Semaphore(0)), limit=4,
                           retry_after_s=lambda: 1)  # fmt: skip
    idle = TEST_LIMITS.queue_size + 64 + 8
    with background_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(idle)]
        try:
            response = httpx.get(url + "/quick", timeout=10)
        finally:
            for sock in sockets:
                sock.close()
    assert response.status_code == 200 and response.text == "ok"


@pytest.mark.parametrize("value, words", [(-1, "max_open_requests"), (4, "must exceed --queue")])
def test_open_request_bound_is_checked(value, words):
    import argparse

    from omni_img.errors import UserError
    from omni_img.serve.commands import add_arguments, limits_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--bundle", "b", "--queue", "8", f"--max_open_requests={value}"])
    with pytest.raises(UserError, match=words):
        limits_from(args)
