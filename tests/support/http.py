"""Small HTTP helpers for the server tests (tests/serve): the server's test limits, PNG
bytes, server-sent events and the one-line JSON error."""

import base64
import io
import json

import numpy as np
from PIL import Image

from omni_img.serve.limits import Limits

TEST_LIMITS = Limits(max_body_bytes=256 * 1024, max_upload_pixels=512 * 512, queue_size=4,
                     max_sessions=8, session_max_age_s=600.0)  # fmt: skip


def png_bytes(array: np.ndarray, format: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def noise_png(seed: int = 0, size=(24, 20)) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8))


def sse_events(text: str) -> list[dict]:
    """The JSON data of each server-sent event in a response body."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].strip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            found.append(json.loads("\n".join(data)))
    return found


def decode_png(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return np.asarray(image.convert("RGB"))


def assert_one_line_error(response, status: int | None = None) -> str:
    """A 4xx with the one-line JSON error body; returns its message."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    text = response.text
    assert text.count("\n") <= 1 and "Traceback" not in text, text
    message = response.json()["error"]["message"]
    assert message and "\n" not in message
    return message
