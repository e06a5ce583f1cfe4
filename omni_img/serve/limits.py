"""The bounds a server keeps; each can be set on the command line (see commands)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every request body, upload, queue and session store is bounded by one of these."""

    max_body_bytes: int = 16 * 1024 * 1024  # a whole request, upload included
    max_upload_pixels: int = 16_000_000  # an uploaded image's width × height (header)
    min_upload_side: int = 8
    queue_size: int = 8  # generate requests waiting for the model, beyond the one running
    max_open_requests: int = 72  # HTTP requests in progress (the queue's 8 + 64 others)
    max_batch: int = 4  # generate requests sampled together (1: no batching)
    batch_window_s: float = 0.02  # how long a batch waits for company (0: take what waits)
    max_sessions: int = 64  # the oldest (least recently used) is dropped past this
    session_max_age_s: float = 3600.0  # a session unused this long is dropped
    max_turns: int = 64  # turns one session may hold

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)
