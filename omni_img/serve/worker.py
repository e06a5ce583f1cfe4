"""The model's one thread and its bounded queue.

JAX runs one generation at a time well and gains nothing from threads racing for the
same device, so every generate request becomes a ``Job`` that waits in a bounded queue
for the worker thread. A full queue is refused at once (503 with a Retry-After computed
from the recent time per run) rather than left to hang. A job talks back through
``emit(event)``, which hands the event to the request's asyncio queue; a request whose
client went away sets ``cancelled`` and the job stops at its next band.

Batching: with ``max_batch`` > 1 and a ``run_batch`` function, the worker takes the
oldest job and every queued job that shares its ``batch_key`` (up to ``max_batch``,
waiting up to ``window_s`` for more to arrive), and runs them as one batch. Jobs of
another key keep their place; two turns of one session never share a batch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import threading
import time
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
    """One thread running jobs, batched where they allow, from a queue of at most
    ``queue_size`` waiting jobs."""

    def __init__(self, queue_size: int, max_batch: int = 1, window_s: float = 0.0,
                 run_batch: Callable[[list[Job]], None] | None = None):  # fmt: skip
        self.capacity, self.max_batch, self.window_s = queue_size, max_batch, window_s
        self.run_batch = run_batch if max_batch > 1 else None
        self.waiting: collections.deque[Job] = collections.deque()
        self.changed = threading.Condition()
        self.stopping = False
        self.recent_seconds: collections.deque[float] = collections.deque(maxlen=16)
        self.running = 0
        self.completed = 0
        self.batches = 0  # runs of more than one job
        self.thread = threading.Thread(target=self._loop, name="omni-img-model", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()

    def retry_after_s(self) -> int:
        """Seconds until a queue slot is likely free: the mean recent run time × the runs
        ahead (the jobs ahead in batches of ``max_batch``), at least 1."""
        mean = sum(self.recent_seconds) / len(self.recent_seconds) if self.recent_seconds else 1
        runs_ahead = math.ceil((len(self.waiting) + self.running) / self.max_batch)
        return max(1, math.ceil(mean * runs_ahead))

    def submit(self, run: Callable, loop: asyncio.AbstractEventLoop) -> Job:
        """Queue a job, or a 503 RequestError with Retry-After when the queue is full."""
        job = Job(run, loop)
        with self.changed:
            if len(self.waiting) >= self.capacity:
                wait = self.retry_after_s()
                raise RequestError(
                    503,
                    f"the server is busy ({self.capacity} requests waiting); retry in {wait} s",
                    {"Retry-After": str(wait)},
                )
            self.waiting.append(job)
            self.changed.notify_all()
        return job

    # ---- the thread

    def _next_jobs(self) -> list[Job] | None:
        """The oldest live job and its batch mates; None once stopping."""
        with self.changed:
            while True:
                while not self.waiting and not self.stopping:
                    self.changed.wait()
                if self.stopping:
                    return None
                first = self.waiting.popleft()
                if first.cancelled.is_set():
                    first.emit(DONE)
                    continue
                break
            jobs = [first]
            if self.run_batch is None or getattr(first.run, "batch_key", None) is None:
                return jobs
            deadline = time.monotonic() + self.window_s
            while True:
                self._take_mates(jobs)
                left = deadline - time.monotonic()
                if len(jobs) >= self.max_batch or left <= 0 or self.stopping:
                    return jobs
                self.changed.wait(left)

    def _take_mates(self, jobs: list[Job]) -> None:
        """Move queued jobs that may join ``jobs``'s batch into it (oldest first)."""
        key = jobs[0].run.batch_key
        sessions = {job.run.session_id for job in jobs} - {None}
        for job in list(self.waiting):
            if len(jobs) >= self.max_batch:
                return
            run = job.run
            if getattr(run, "batch_key", None) != key or job.cancelled.is_set():
                continue
            if run.session_id is not None and run.session_id in sessions:
                continue  # the later turn must see the earlier one's image
            self.waiting.remove(job)
            jobs.append(job)
            sessions.add(run.session_id)

    def _loop(self) -> None:
        while (jobs := self._next_jobs()) is not None:
            self.running = len(jobs)
            start = time.perf_counter()
            try:
                if self.run_batch is not None and hasattr(jobs[0].run, "batch_key"):
                    self.run_batch(jobs)
                else:
                    jobs[0].run(jobs[0].emit, jobs[0].cancelled)
            except UserError as error:
                self._tell(jobs, ("error", 400, str(error)))
            except RequestError as error:
                self._tell(jobs, ("error", error.status, error.message))
            except Exception:  # noqa: BLE001  (logged here; the client gets one line)
                log.exception("generation failed")
                message = "internal error while generating (see the server log)"
                self._tell(jobs, ("error", 500, message))
            finally:
                self.running = 0
                self.completed += len(jobs)
                self.batches += len(jobs) > 1
                self.recent_seconds.append(time.perf_counter() - start)
                self._tell(jobs, DONE)

    @staticmethod
    def _tell(jobs: list[Job], event: tuple) -> None:
        for job in jobs:
            job.emit(event)

    def status(self) -> dict[str, Any]:
        return {
            "waiting": len(self.waiting),
            "running": self.running,
            "capacity": self.capacity,
            "completed": self.completed,
            "max_batch": self.max_batch if self.run_batch else 1,
            "batches": self.batches,
        }
