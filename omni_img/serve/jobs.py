"""What the model thread runs for one GenerateRequest: the session turn, the bands, the
signed PNGs, and the events that carry them back to the request.

Events (see worker.Job): ``("partial", index, png)`` per streamed band the client asked
for, then ``("final", png, extras)``; a failure is ``("error", status, message)``. A job
whose client went away stops at the next band, and its session keeps no half turn
(``Pipeline.stream`` records the turn only once the last band is out).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from omni_img.serve.errors import RequestError
from omni_img.serve.parsing import GenerateRequest
from omni_img.serve.sessions import SessionEntry, SessionStore, TurnRecord


@dataclasses.dataclass
class Model:
    """The loaded bundle as the jobs use it."""

    pipeline: Any  # sampling.pipeline.Pipeline
    manifest: dict[str, Any]  # the bundle's
    stamper: Any  # provenance.stamp.Stamper
    store: SessionStore
    max_turns: int


def partial_bands(requested: int | None, num_bands: int) -> set[int]:
    """The bands (all but the last, which is the final image) sent as partial images:
    all of them, or ``requested`` spread evenly, ending with the band before the last."""
    before_last = list(range(num_bands - 1))
    if requested is None or requested >= len(before_last):
        return set(before_last)
    if requested <= 0:
        return set()
    step = len(before_last) / requested
    return {before_last[int(round((i + 1) * step)) - 1] for i in range(requested)}


def session_for(model: Model, request: GenerateRequest) -> SessionEntry | None:
    """The existing session a request continues (404 unknown, 409 full or image clash);
    None for a stateless or a new session. Runs before the request is queued."""
    if request.session in (None, "new"):
        return None
    entry = model.store.get(request.session)
    if len(entry.session.turns) >= model.max_turns:
        raise RequestError(
            409, f"session has {model.max_turns} turns, the most kept; start a new one"
        )
    if request.image is not None and entry.session.last_image() is not None:
        raise RequestError(
            409, "the session already has an image; start a new session to edit an upload"
        )
    return entry


def provenance_text(model: Model, request: GenerateRequest, entry) -> dict[str, str]:
    from omni_img.export.generate import provenance

    extra: dict[str, Any] = {}
    if request.image is not None:
        extra["source_image"] = "upload"
    if entry is not None:
        extra["session_turn"] = len(entry.session.turns) + 1
    return provenance(prompt=request.prompt, seed=request.seed, decoder=request.decoder,
                      sampling=request.sampling, manifest=model.manifest, **extra)  # fmt: skip


def run_generation(model: Model, request: GenerateRequest, entry: SessionEntry | None):
    """A worker job: ``job(emit, cancelled)``."""

    def job(emit, cancelled) -> None:
        pipeline = model.pipeline
        nonlocal entry
        if request.session == "new":
            entry = model.store.create(
                pipeline.new_session(), started_from_upload=request.image is not None
            )
        session = None if entry is None else entry.session
        text = provenance_text(model, request, entry)
        source = request.image_bytes or (None if entry is None else entry.last_png)
        kwargs = dict(seed=request.seed, decoder=request.decoder, source_image=request.image,
                      session=session, sampling=request.sampling)  # fmt: skip
        sign = lambda image, chunks: model.stamper.png(image, chunks, source=source)  # noqa: E731
        if request.stream and request.decoder != "conv":
            image = _stream_bands(pipeline, request, text, sign, emit, cancelled, kwargs)
            if image is None:
                return
        else:
            image = pipeline.generate(request.prompt, **kwargs)
        png = sign(image, text)
        extras = {"seed": request.seed, "c2pa": model.stamper.credentials.trust_note}
        if entry is not None:
            entry.turns.append(
                TurnRecord(request.prompt, request.seed, request.decoder, time.time())
            )
            entry.last_png = png
            extras |= {"session_id": entry.id, "turn": len(entry.turns)}
        emit(("final", png, extras))

    return job


def _stream_bands(pipeline, request, text, sign, emit, cancelled, kwargs):
    """Emit the wanted partial bands; the last band's image, or None if cancelled."""
    num_bands = pipeline.rolling_cfg.num_bands
    wanted = partial_bands(request.partial_images, num_bands)
    index = 0
    image = None
    for band, image in pipeline.stream(request.prompt, **kwargs):
        if cancelled.is_set():
            return None  # closing the generator records no turn
        if band in wanted:
            emit(("partial", index, sign(image, {**text, "partial": f"{band + 1}/{num_bands}"})))
            index += 1
    return image
