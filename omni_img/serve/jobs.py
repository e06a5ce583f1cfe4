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


class Generation:
    """One generate request as the model thread runs it, alone (``__call__``, the worker's
    job) or in a batch (``prepare``, ``band``, ``finish``; see serve.batching).

    ``batch_key`` names what must match for requests to share a compiled batch: the
    decoder, the sampling settings and whether bands stream. ``session_id`` keeps two
    turns of one session out of one batch (the second edits the first's image).
    """

    def __init__(self, model: Model, request: GenerateRequest, entry: SessionEntry | None):
        self.model, self.request, self.entry = model, request, entry
        self.streams = request.stream and request.decoder != "conv"
        self.batch_key = (request.decoder, request.sampling, self.streams)
        self.session_id = None if entry is None else entry.id
        self.emit = self.text = self.source = None
        self.wanted: set[int] = set()

    # ---- the steps a batch runs

    def prepare(self, emit) -> dict:
        """``open``, then the request's batch-of-one conditioning dict (an upload that
        starts a session becomes the session's image here)."""
        self.open(emit)
        request = self.request
        return self.model.pipeline.conditioning(
            request.prompt, source_image=request.image, session=self.session
        )

    def open(self, emit) -> None:
        """Open the session (a new one is created here) and note the provenance."""
        model, request = self.model, self.request
        self.emit = emit
        if request.session == "new":
            self.entry = model.store.create(
                model.pipeline.new_session(), started_from_upload=request.image is not None
            )
        self.text = provenance_text(model, request, self.entry)
        self.source = request.image_bytes or (None if self.entry is None else self.entry.last_png)
        self.wanted = partial_bands(request.partial_images, model.pipeline.rolling_cfg.num_bands)

    @property
    def session(self):
        return None if self.entry is None else self.entry.session

    def sign(self, image, chunks) -> bytes:
        return self.model.stamper.png(image, chunks, source=self.source)

    def band(self, band: int, image) -> None:
        """A band became clean: send it if the client asked for it."""
        if band in self.wanted:
            bands = self.model.pipeline.rolling_cfg.num_bands
            index = sorted(self.wanted).index(band)
            chunks = {**self.text, "partial": f"{band + 1}/{bands}"}
            self.emit(("partial", index, self.sign(image, chunks)))

    def finish(self, image, tokens=None) -> None:
        """The image is done: record the turn (``tokens`` given: in the Session too, as
        ``Pipeline.generate`` does itself), sign it, and send it."""
        request = self.request
        if tokens is not None and self.session is not None:
            self.session.add_turn(request.prompt, tokens)
        png = self.sign(image, self.text)
        extras = {"seed": request.seed, "c2pa": self.model.stamper.credentials.trust_note}
        if self.entry is not None:
            self.entry.turns.append(
                TurnRecord(request.prompt, request.seed, request.decoder, time.time())
            )
            self.entry.last_png = png
            extras |= {"session_id": self.entry.id, "turn": len(self.entry.turns)}
        self.emit(("final", png, extras))

    # ---- alone

    def __call__(self, emit, cancelled) -> None:
        """The worker's job for a request sampled on its own (batching off)."""
        request, pipeline = self.request, self.model.pipeline
        self.open(emit)
        kwargs = dict(seed=request.seed, decoder=request.decoder, source_image=request.image,
                      session=self.session, sampling=request.sampling)  # fmt: skip
        if self.streams:
            image = None
            for band, image in pipeline.stream(request.prompt, **kwargs):
                if cancelled.is_set():
                    return  # closing the generator records no turn
                self.band(band, image)
        else:
            image = pipeline.generate(request.prompt, **kwargs)
        self.finish(image)


def run_generation(model: Model, request: GenerateRequest, entry: SessionEntry | None):
    """A worker job for one request: ``job(emit, cancelled)``, batchable (see Generation)."""
    return Generation(model, request, entry)
