"""Running the application under uvicorn: in the foreground (the command) or on a
background thread (tests and the load benchmark, always on the loopback address)."""

from __future__ import annotations

import contextlib
import threading
import time

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def uvicorn_config(app, host: str, port: int, access_log: bool = False):
    """uvicorn's own ``limit_concurrency`` stays off: the application bounds open requests
    (overload.OpenRequestLimit) and answers past it with its JSON 503 and a Retry-After,
    where uvicorn would answer plain text. A client that sends nothing for 5 s is
    dropped, so idle connections do not pile up; request heads are at most 64 KiB (h11,
    always, so that bound holds whichever HTTP parsers are installed)."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=access_log,
        limit_concurrency=None, timeout_keep_alive=5,
        http="h11", h11_max_incomplete_event_size=64 * 1024, lifespan="on",
    )  # fmt: skip


@contextlib.contextmanager
def background_server(app, start_timeout_s: float = 60.0):
    """Serve ``app`` on 127.0.0.1 on a free port in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, name="omni-img-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
