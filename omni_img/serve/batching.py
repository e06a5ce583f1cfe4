"""Micro-batching: generate requests with the same compiled shape sampled as one batch.

The worker (serve.worker) gathers queued jobs whose ``batch_key`` matches (decoder,
sampling settings, streamed or not; the resolution is the bundle's, one for all) and
hands them here. Each request keeps its own seed, session, partial bands and signed PNG;
``sampling.batched`` samples the batch as a vmap of the batch-of-one samplers, padded to
one size, so a request's pixels are the same whether it ran alone or with company.
"""

from __future__ import annotations

import logging

from omni_img.errors import UserError
from omni_img.sampling import batched
from omni_img.serve.errors import RequestError

log = logging.getLogger("omni_img.serve")


def prepare_members(jobs) -> tuple[list, list]:
    """(jobs whose request could be prepared, their conditioning dicts); a job whose own
    request fails here (e.g. its upload) gets its error and leaves the batch."""
    ready, conds = [], []
    for job in jobs:
        try:
            conds.append(job.run.prepare(job.emit))
            ready.append(job)
        except UserError as error:
            job.emit(("error", 400, str(error)))
        except RequestError as error:
            job.emit(("error", error.status, error.message))
    return ready, conds


def run_batch(pipeline, jobs, pad_to: int) -> None:
    """Sample every job's request together (they share a ``batch_key``) and send each its
    bands and image. Raising leaves the error to the worker, which tells every job."""
    ready, conds = prepare_members(jobs)
    if not ready:
        return
    generations = [job.run for job in ready]
    decoder, sampling, streams = generations[0].batch_key
    seeds = [g.request.seed for g in generations]
    if not streams:
        images, tokens = batched.generate_many(pipeline, conds, seeds, sampling, decoder, pad_to)
        for job, image, grid in zip(ready, images, tokens):
            if not job.cancelled.is_set():
                job.run.finish(image, grid)
        return
    last = None
    for band, images, tokens in batched.stream_many(pipeline, conds, seeds, sampling, decoder,
                                                    pad_to):  # fmt: skip
        if tokens is not None:
            break
        live = [i for i, job in enumerate(ready) if not job.cancelled.is_set()]
        if not live:
            return  # every client left: no turn is recorded
        for i in live:
            generations[i].band(band, images[i])
        last = images
    for job, image, grid in zip(ready, last, tokens):
        if not job.cancelled.is_set():  # a client that left gets no turn either
            job.run.finish(image, grid)
