"""Responses in the Images API's conventions, which existing clients already parse.

Streaming: each band that lands is an ``image_generation.partial_image`` event
(``b64_json``, ``partial_image_index`` from 0) and the finished image an
``image_generation.completed`` event; a failure after the stream began is an ``error``
event. This project's extras ride along in the same objects (seed, session id, turn,
the C2PA trust note), where clients that do not know them ignore them.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def image_fields(size: tuple[int, int], created: int) -> dict[str, Any]:
    h, w = size
    return {"created_at": created, "size": f"{w}x{h}", "output_format": "png",
            "quality": "auto", "background": "opaque"}  # fmt: skip


def partial_image(png: bytes, index: int, size, created: int) -> dict[str, Any]:
    return {"type": "image_generation.partial_image", "b64_json": _b64(png),
            "partial_image_index": index, **image_fields(size, created)}  # fmt: skip


def completed(png: bytes, size, created: int, extras: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image_generation.completed", "b64_json": _b64(png),
            **image_fields(size, created), **extras}  # fmt: skip


def error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"message": message, "code": status}}


def sse(payload: dict[str, Any]) -> dict[str, str]:
    """An sse-starlette event: the type as the event name, the object as JSON data."""
    return {"event": payload["type"], "data": json.dumps(payload, ensure_ascii=False)}


def images_response(png: bytes, size, extras: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming ``/v1/images/generations`` body."""
    h, w = size
    return {"created": int(time.time()), "data": [{"b64_json": _b64(png)}],
            "output_format": "png", "size": f"{w}x{h}", **extras}  # fmt: skip
