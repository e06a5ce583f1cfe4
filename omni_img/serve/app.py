"""The Starlette application of ``omni-img serve``.

    GET    /                          the web page (static/index.html + app.js)
    GET    /healthz                   {"status": "ok"} once the model is loaded
    GET    /v1/info                   bundle id, model sizes, resolution, decoders, limits
    POST   /v1/generate               PNG, or with stream: server-sent events of bands
    POST   /v1/images/generations     the Images API's request and response shapes
    POST   /v1/sessions               a new empty session: {"id": ...}
    GET    /v1/sessions               every live session
    GET    /v1/sessions/{id}          one session's turns
    DELETE /v1/sessions/{id}          forget a session

Every error is a 4xx or 5xx with one line of JSON (``errors.error_body``), the 503s of
a full queue and of too many open requests (overload.py) included; a traceback goes to
the server's log, never to a client. With an API key set, every route but the
page, its script and /healthz needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import pathlib
import time
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from omni_img.errors import UserError
from omni_img.serve import batching, events, parsing
from omni_img.serve.bodies import parse_fields, read_body
from omni_img.serve.errors import RequestError, error_body
from omni_img.serve.jobs import Model, run_generation, session_for
from omni_img.serve.limits import Limits
from omni_img.serve.overload import OpenRequestLimit
from omni_img.serve.sessions import SessionStore
from omni_img.serve.worker import DONE, ModelWorker

log = logging.getLogger("omni_img.serve")
STATIC = pathlib.Path(__file__).parent / "static"
OPEN_PATHS = ("/", "/app.js", "/healthz")  # no key needed: they reveal nothing


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    return Response(error_body(status, message), status, headers, "application/json")


class ApiKeyGate:
    """ASGI middleware: 401 unless the request carries the key (compared in constant time)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key") or b""
        bearer = headers.get(b"authorization", b"")
        if bearer[:7].lower() == b"bearer ":
            given = bearer[7:].strip()
        return hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            if not self.authorized(dict(scope["headers"])):
                response = error_response(
                    401, "missing or wrong API key (Authorization: Bearer KEY)"
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class Server:
    """The state every route shares: the model, its worker, sessions, limits."""

    def __init__(self, bundle, stamper, limits: Limits):
        pipeline = bundle.pipeline
        self.bundle, self.limits = bundle, limits
        self.store = SessionStore(limits.max_sessions, limits.session_max_age_s)
        self.model = Model(pipeline, bundle.manifest, stamper, self.store, limits.max_turns)
        run_batch = functools.partial(batching.run_batch, pipeline, pad_to=limits.max_batch)
        self.worker = ModelWorker(limits.queue_size, limits.max_batch, limits.batch_window_s,
                                  run_batch)  # fmt: skip
        cfg = pipeline.generator.cfg
        from omni_img.text.tokenizer import encode_prompt

        self.facts = parsing.ModelFacts(
            check_prompt=lambda p: encode_prompt(pipeline.text_tokenizer, p, cfg.max_text_len),
            takes_images=cfg.use_source,
            image_size=pipeline.image_size,
            num_bands=pipeline.rolling_cfg.num_bands,
        )
        self.info = model_info(bundle, stamper, limits)

    # ---- generation

    async def fields(self, request) -> dict[str, Any]:
        body = await read_body(request, self.limits.max_body_bytes)
        return parse_fields(request.headers.get("content-type", ""), body)

    async def generate(self, request):
        fields = await self.fields(request)
        checked = await run_in_threadpool(parsing.generate_request, fields, self.facts, self.limits)
        return await self.respond(checked, images_api=False)

    async def images_generations(self, request):
        fields = await self.fields(request)
        return await self.respond(parsing.images_api_request(fields, self.facts), images_api=True)

    async def respond(self, checked: parsing.GenerateRequest, *, images_api: bool):
        entry = session_for(self.model, checked)
        job_fn = run_generation(self.model, checked, entry)
        job = self.worker.submit(job_fn, asyncio.get_running_loop())
        if checked.stream:
            from sse_starlette.sse import EventSourceResponse

            return EventSourceResponse(self.stream_events(job), ping=15)
        final = None
        try:
            while (event := await job.events.get()) != DONE:
                if event[0] == "error":
                    raise RequestError(event[1], event[2])
                if event[0] == "final":
                    final = event
        finally:
            job.cancelled.set()
        if final is None:
            raise RequestError(503, "the server stopped before the image was made")
        _, png, extras = final
        size = self.facts.image_size
        if images_api:
            return JSONResponse(events.images_response(png, size, extras))
        headers = {"X-Seed": str(extras["seed"]), "X-C2PA": extras["c2pa"]}
        if "session_id" in extras:
            headers |= {"X-Session-Id": extras["session_id"], "X-Session-Turn": str(extras["turn"])}
        return Response(png, 200, headers, "image/png")

    async def stream_events(self, job):
        created, size = int(time.time()), self.facts.image_size
        try:
            while (event := await job.events.get()) != DONE:
                if event[0] == "partial":
                    yield events.sse(events.partial_image(event[2], event[1], size, created))
                elif event[0] == "final":
                    yield events.sse(events.completed(event[1], size, created, event[2]))
                else:
                    yield events.sse(events.error(event[1], event[2]))
        finally:
            job.cancelled.set()  # the client left, or the stream ended: stop the bands

    # ---- sessions and status

    async def create_session(self, request):
        entry = self.store.create(self.model.pipeline.new_session())
        return JSONResponse(entry.describe(self.store.max_age_s, self.store.clock()), 201)

    async def list_sessions(self, request):
        return JSONResponse({"sessions": self.store.describe_all()})

    async def get_session(self, request):
        return JSONResponse(self.store.describe(request.path_params["session_id"]))

    async def delete_session(self, request):
        self.store.delete(request.path_params["session_id"])
        return Response(status_code=204)

    async def healthz(self, request):
        return JSONResponse({"status": "ok", "queue": self.worker.status()})

    async def info_route(self, request):
        return JSONResponse(
            self.info | {"sessions": len(self.store), "queue": self.worker.status()}
        )


def model_info(bundle, stamper, limits: Limits) -> dict[str, Any]:
    """What /v1/info reports of the bundle (computed once)."""
    import jax

    from omni_img import __version__
    from omni_img.sampling.pipeline import DECODERS

    pipeline = bundle.pipeline
    count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))  # noqa: E731
    h, w = pipeline.image_size
    return {
        "bundle_id": bundle.bundle_id,
        "omni_img_version": __version__,
        "bundle_dtype": bundle.manifest.get("dtype"),
        "image_size": {"height": h, "width": w},
        "token_grid": list(pipeline.grid),
        "num_bands": pipeline.rolling_cfg.num_bands,
        "max_text_len": pipeline.generator.cfg.max_text_len,
        "takes_images": pipeline.generator.cfg.use_source,
        "decoders": list(DECODERS),
        "parameters": {
            "tokenizer": count(pipeline.tokenizer_params),
            "generator": count(pipeline.generator_params),
            "rolling_decoder": count(pipeline.rolling_params),
        },
        "c2pa": stamper.credentials.trust_note,
        "limits": limits.as_dict(),
    }


# ----------------------------------------------------------------------------- errors


async def _on_request_error(request, error: RequestError):
    return error_response(error.status, error.message, error.headers)


async def _on_user_error(request, error: UserError):
    return error_response(400, str(error))


async def _on_http_exception(request, error: HTTPException):
    return error_response(error.status_code, str(error.detail))


async def _on_unexpected(request, error: Exception):
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal server error (see the server log)")


def create_app(bundle, stamper, limits: Limits | None = None, api_key: str | None = None):
    """The ASGI application serving ``bundle`` (an ``export.bundle.Bundle``)."""
    server = Server(bundle, stamper, limits or Limits())
    page = lambda name, kind: lambda request: FileResponse(STATIC / name, media_type=kind)  # noqa: E731
    routes = [
        Route("/", page("index.html", "text/html"), methods=["GET"]),
        Route("/app.js", page("app.js", "text/javascript"), methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/v1/info", server.info_route, methods=["GET"]),
        Route("/v1/generate", server.generate, methods=["POST"]),
        Route("/v1/images/generations", server.images_generations, methods=["POST"]),
        Route("/v1/sessions", server.create_session, methods=["POST"]),
        Route("/v1/sessions", server.list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", server.get_session, methods=["GET"]),
        Route("/v1/sessions/{session_id}", server.delete_session, methods=["DELETE"]),
    ]
    handlers = {RequestError: _on_request_error, UserError: _on_user_error,
                HTTPException: _on_http_exception, Exception: _on_unexpected}  # fmt: skip

    async def lifespan(app):
        server.worker.start()
        yield
        server.worker.stop()

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=_as_context(lifespan))
    app.state.server = server
    gated = ApiKeyGate(app, api_key) if api_key else app
    return OpenRequestLimit(gated, server.limits.max_open_requests, server.worker.retry_after_s)


def _as_context(generator_fn):
    import contextlib

    return contextlib.asynccontextmanager(generator_fn)
