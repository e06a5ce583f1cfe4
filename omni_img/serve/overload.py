"""The bound on open requests, answered like every other error.

uvicorn can bound concurrency itself (``limit_concurrency``), but past it answers a
plain-text 503 with no Retry-After, and it counts idle keep-alive connections too, so a
few idle clients could make it refuse. This ASGI middleware bounds the HTTP requests in
progress instead (a streamed response counts until its last event is sent) and refuses
the one past the bound with the project's one-line JSON error and a Retry-After, before
the request's body is read. uvicorn's own limit is left off (see running.py), so this
is the only concurrency refusal a client ever sees.
"""

from __future__ import annotations

from collections.abc import Callable

from omni_img.serve.errors import error_body


class OpenRequestLimit:
    """At most ``limit`` HTTP requests in progress; the next gets a JSON 503.

    ``retry_after_s()`` gives the Retry-After seconds (the model worker's estimate). The
    count is kept on the event loop's thread only (ASGI calls run there), so needs no lock.
    """

    def __init__(self, app, limit: int, retry_after_s: Callable[[], int]):
        self.app, self.limit, self.retry_after_s = app, limit, retry_after_s
        self.open = 0
        self.refused = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.open >= self.limit:
            self.refused += 1
            return await self.refuse(send)
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1

    async def refuse(self, send) -> None:
        wait = max(1, int(self.retry_after_s()))
        body = error_body(
            503, f"the server is busy ({self.limit} requests open); retry in {wait} s"
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(wait).encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # shed the connection too, not only the request
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
