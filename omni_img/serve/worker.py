"""The model's one thread and its bounded queue.

JAX runs one generation at a time well and gains nothing from threads racing for the
same device, so every generate request becomes a ``Job`` that waits in a bounded queue
for the worker thread. A full queue is refused at once (503 with a Retry-After computed
from the recent time per job) rather than left to hang. A job talks back through
``emit(event)``, which hands the event to the request's asyncio queue; a request whose
client went away sets ``cancelled`` and the job stops at its next band.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import queue
import threading
from collections.abc import Callable
from typing import Any

from omni_img.errors import UserError
from omni_img.serve.errors import RequestError

log = logging.getLogger("omni_img.serve")
DONE = ("done",)  # the last event of every job


@dataclasses.dataclass
class Job:
    """``run(emit, cancelled)`` executes on the worker thread; ``events`` is read by the
    request on the event loop."""

    run: Callable[[Callable[[tuple], None], threading.Event], None]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)

    def emit(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop closed: the server is shutting down
            self.cancelled.set()


class ModelWorker:
    """One thread running jobs in order from a queue of at most ``queue_size``."""

    def __init__(self, queue_size: int):
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.recent_seconds: collections.deque[float] = collections.deque(maxlen=16)
        self.running = 0
        self.completed = 0
        self.thread = threading.Thread(target=self._loop, name="omni-img-model", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:  # the thread is a daemon; it dies with the process
            pass

    def retry_after_s(self) -> int:
        """Seconds until a queue slot is likely free: the mean recent job time × the
        jobs ahead, at least 1."""
        mean = sum(self.recent_seconds) / len(self.recent_seconds) if self.recent_seconds else 1
        return max(1, math.ceil(mean * (self.queue.qsize() + self.running)))

    def submit(self, run: Callable, loop: asyncio.AbstractEventLoop) -> Job:
        """Queue a job, or a 503 RequestError with Retry-After when the queue is full."""
        job = Job(run, loop)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            wait = self.retry_after_s()
            raise RequestError(
                503,
                f"the server is busy ({self.queue.maxsize} requests waiting); retry in {wait} s",
                {"Retry-After": str(wait)},
            ) from None
        return job

    def _loop(self) -> None:
        import time

        while (job := self.queue.get()) is not None:
            if job.cancelled.is_set():
                job.emit(DONE)
                continue
            self.running = 1
            start = time.perf_counter()
            try:
                job.run(job.emit, job.cancelled)
            except UserError as error:
                job.emit(("error", 400, str(error)))
            except RequestError as error:
                job.emit(("error", error.status, error.message))
            except Exception:  # noqa: BLE001  (logged here; the client gets one line)
                log.exception("generation failed")
                job.emit(("error", 500, "internal error while generating (see the server log)"))
            finally:
                self.running = 0
                self.completed += 1
                self.recent_seconds.append(time.perf_counter() - start)
                job.emit(DONE)

    def status(self) -> dict[str, Any]:
        return {
            "waiting": self.queue.qsize(),
            "running": self.running,
            "capacity": self.queue.maxsize,
            "completed": self.completed,
        }
