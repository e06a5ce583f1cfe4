"""Errors a request can end in: a status and one line for the client."""

from __future__ import annotations

import json


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message``;
    ``headers`` go on the response (Retry-After on a 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())  # one line, whatever came in
        self.headers = headers or {}


ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 503: "server_busy"}


def error_body(status: int, message: str) -> bytes:
    """The one-line JSON every error response carries (the Images API's error shape)."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    line = " ".join(str(message).split())
    error = {"error": {"message": line, "type": kind, "code": status}}
    return json.dumps(error, ensure_ascii=False).encode() + b"\n"
