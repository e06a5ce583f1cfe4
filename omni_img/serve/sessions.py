"""Multi-turn sessions kept in memory: each holds the ``Session`` (its turns' prompts and
token grids, what the next instruction edits) and the last PNG sent (the next turn's
C2PA ingredient).

The store is bounded twice: a session unused for ``max_age_s`` is dropped, and when
``max_sessions`` are held a new one drops the least recently used first. Ids are random
and unguessable (128 bits); they are the only key to a session's prompts.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable

from omni_img.sampling.session import Session
from omni_img.serve.errors import RequestError


@dataclasses.dataclass
class TurnRecord:
    """What a client may list of a turn."""

    prompt: str
    seed: int
    decoder: str
    created_at: float


@dataclasses.dataclass
class SessionEntry:
    id: str
    session: Session
    created_at: float  # wall clock, for clients
    last_used: float  # the store's clock, for expiry
    turns: list[TurnRecord] = dataclasses.field(default_factory=list)
    last_png: bytes | None = None
    started_from_upload: bool = False

    def describe(self, max_age_s: float, now: float) -> dict:
        return {
            "id": self.id,
            "created_at": int(self.created_at),
            "expires_in_s": max(0, round(max_age_s - (now - self.last_used))),
            "started_from_upload": self.started_from_upload,
            "turns": [dataclasses.asdict(t) | {"created_at": int(t.created_at)}
                      for t in self.turns],
        }  # fmt: skip


class SessionStore:
    """Sessions by id, bounded in count and idle age; safe to use from several threads."""

    def __init__(self, max_sessions: int, max_age_s: float, clock: Callable[[], float] = None):
        self.max_sessions = max_sessions
        self.max_age_s = max_age_s
        self.clock = clock or time.monotonic
        self._entries: dict[str, SessionEntry] = {}  # insertion order = least recent first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, e in self._entries.items() if now - e.last_used > self.max_age_s]:
            del self._entries[key]

    def create(self, session: Session, *, started_from_upload: bool = False) -> SessionEntry:
        """A new entry; past ``max_sessions`` the least recently used are dropped."""
        with self._lock:
            self._expire()
            while len(self._entries) >= self.max_sessions:
                del self._entries[next(iter(self._entries))]
            entry = SessionEntry(
                secrets.token_urlsafe(16), session, time.time(), self.clock(),
                started_from_upload=started_from_upload,
            )  # fmt: skip
            self._entries[entry.id] = entry
            return entry

    def get(self, session_id: str) -> SessionEntry:
        """The entry, marked as just used; a 404 RequestError when unknown or expired."""
        with self._lock:
            self._expire()
            entry = self._entries.pop(session_id, None) if isinstance(session_id, str) else None
            if entry is None:
                raise RequestError(404, f"unknown session {str(session_id)[:64]!r} (expired?)")
            entry.last_used = self.clock()
            self._entries[session_id] = entry  # now the most recent
            return entry

    def delete(self, session_id: str) -> None:
        with self._lock:
            if self._entries.pop(session_id, None) is None:
                raise RequestError(404, f"unknown session {session_id[:64]!r} (expired?)")

    def describe_all(self) -> list[dict]:
        with self._lock:
            self._expire()
            now = self.clock()
            return [e.describe(self.max_age_s, now) for e in self._entries.values()]

    def describe(self, session_id: str) -> dict:
        entry = self.get(session_id)
        return entry.describe(self.max_age_s, self.clock())
