"""Fields of a generate request -> a checked ``GenerateRequest``; anything wrong is a
4xx ``RequestError`` naming the field, before the request waits for the model.

Two dialects: ``/v1/generate`` (this project's: every sampling setting, sessions, uploads;
unknown fields refused, as typos) and ``/v1/images/generations`` (the Images API's
fields; those that do not apply to a single local model, such as ``model`` and
``quality``, are accepted and ignored, so existing clients work unchanged).
"""

from __future__ import annotations

import dataclasses
import io
import secrets
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from omni_img.errors import UserError
from omni_img.serve.bodies import Upload
from omni_img.serve.errors import RequestError
from omni_img.serve.limits import Limits

GENERATE_FIELDS = {"prompt", "session", "image", "seed", "decoder", "stream", "temperature",
                   "top_k", "top_p", "cfg_scale", "partial_images"}  # fmt: skip
IMAGES_API_FIELDS = {"prompt", "n", "size", "response_format", "output_format", "stream",
                     "partial_images", "seed", "decoder", "session"}  # fmt: skip
IMAGES_API_IGNORED = {"model", "quality", "background", "user", "moderation", "style",
                      "output_compression"}  # fmt: skip
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


@dataclasses.dataclass
class GenerateRequest:
    prompt: str
    seed: int
    decoder: str
    sampling: Any  # ar.SamplingConfig
    stream: bool = False
    session: str | None = None  # None: stateless; "new": start one; else an id
    image: np.ndarray | None = None  # the decoded upload, uint8 (H, W, 3)
    image_bytes: bytes | None = None
    partial_images: int | None = None  # None: every band


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What parsing needs to know of the model."""

    check_prompt: Callable[[str], Any]  # UserError when empty, too long, not Unicode
    takes_images: bool
    image_size: tuple[int, int]  # (H, W)
    num_bands: int


# ----------------------------------------------------------------------------- fields


def text_field(fields: dict, name: str) -> str | None:
    """A text field (form bytes must be UTF-8); None when absent."""
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(400, f"{name} is not valid UTF-8 (byte {error.start})") from None
    if isinstance(value, str):
        return value
    raise RequestError(400, f"{name} must be a string, got {type(value).__name__}")


def number_field(fields: dict, name: str, kind: type, default):
    """An int or float field, from JSON numbers or form text; 400 otherwise."""
    value = fields.get(name)
    if value is None:
        return default
    if isinstance(value, bytes | str) and not isinstance(value, Upload):
        text = text_field(fields, name).strip()
        try:
            value = kind(text) if kind is float else int(text, 10)
        except ValueError:
            raise RequestError(400, f"{name} must be a number, got {text[:32]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(400, f"{name} must be a number, got {type(value).__name__}")
    if kind is int and value != int(value):
        raise RequestError(400, f"{name} must be an integer, got {value}")
    value = kind(value)
    if kind is float and not np.isfinite(value):
        raise RequestError(400, f"{name} must be a finite number")
    return value


def bool_field(fields: dict, name: str) -> bool:
    value = fields.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = text_field(fields, name).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise RequestError(400, f"{name} must be true or false, got {text[:16]!r}")


def check_known(fields: dict, known: set[str], ignored: set[str] = frozenset()) -> None:
    unknown = sorted(set(fields) - known - ignored)
    if unknown:
        raise RequestError(
            400, f"unknown field {unknown[0][:32]!r}; known: {', '.join(sorted(known))}"
        )


# ----------------------------------------------------------------------------- parts


def prompt_of(fields: dict, facts: ModelFacts) -> str:
    prompt = text_field(fields, "prompt")
    if prompt is None:
        raise RequestError(400, "prompt is missing")
    try:
        facts.check_prompt(prompt)
    except UserError as error:
        raise RequestError(400, str(error)) from None
    return prompt


def seed_of(fields: dict) -> int:
    seed = number_field(fields, "seed", int, None)
    if seed is None:
        return secrets.randbelow(2**32)
    if not 0 <= seed < 2**32:
        raise RequestError(400, f"seed must lie in [0, 2**32), got {seed}")
    return seed


def sampling_of(fields: dict):
    """An ar.SamplingConfig; the range checks are generate's (flag dashes dropped)."""
    from omni_img.export.generate import sampling_config

    values = types.SimpleNamespace(
        temperature=number_field(fields, "temperature", float, 1.0),
        top_k=number_field(fields, "top_k", int, 0),
        top_p=number_field(fields, "top_p", float, 1.0),
        cfg_scale=number_field(fields, "cfg_scale", float, 1.0),
    )
    try:
        return sampling_config(values)
    except UserError as error:
        raise RequestError(400, str(error).replace("--", "")) from None


def decoder_of(fields: dict) -> str:
    from omni_img.sampling.pipeline import check_decoder

    try:
        return check_decoder(text_field(fields, "decoder") or "rolling")
    except UserError as error:
        raise RequestError(400, str(error)) from None


def session_of(fields: dict) -> str | None:
    session = text_field(fields, "session")
    if session is None or not session.strip():
        return None
    if len(session) > 64:
        raise RequestError(404, "unknown session (ids are at most 64 characters)")
    return session.strip()


def image_of(fields: dict, facts: ModelFacts, limits: Limits) -> tuple[np.ndarray, bytes] | None:
    """The decoded upload and its bytes; 400 for anything that is not an RGB-able image."""
    from omni_img.sampling.pipeline import read_image

    upload = fields.get("image")
    if upload is None or (isinstance(upload, bytes) and not upload):
        return None
    if not isinstance(upload, Upload):
        raise RequestError(400, "image must be a file upload (multipart) or base64 (JSON)")
    if not facts.takes_images:
        raise RequestError(400, "this model is text-to-image only: it cannot edit an image")
    try:
        pixels = read_image(
            io.BytesIO(upload.data), max_pixels=limits.max_upload_pixels,
            min_side=limits.min_upload_side, name=repr(upload.filename[:64]),
        )  # fmt: skip
    except UserError as error:
        raise RequestError(400, str(error)) from None
    except Exception:  # noqa: BLE001  (PIL raises many kinds on hostile files)
        raise RequestError(400, "the upload is not an image this server can read") from None
    return pixels, upload.data


def partial_images_of(fields: dict, facts: ModelFacts) -> int | None:
    count = number_field(fields, "partial_images", int, None)
    if count is not None and not 0 <= count <= facts.num_bands:
        raise RequestError(400, f"partial_images must lie in [0, {facts.num_bands}], got {count}")
    return count


# ----------------------------------------------------------------------------- dialects


def generate_request(fields: dict, facts: ModelFacts, limits: Limits) -> GenerateRequest:
    """``/v1/generate``'s fields."""
    check_known(fields, GENERATE_FIELDS)
    image = image_of(fields, facts, limits)
    return GenerateRequest(
        prompt=prompt_of(fields, facts),
        seed=seed_of(fields),
        decoder=decoder_of(fields),
        sampling=sampling_of(fields),
        stream=bool_field(fields, "stream"),
        session=session_of(fields),
        image=None if image is None else image[0],
        image_bytes=None if image is None else image[1],
        partial_images=partial_images_of(fields, facts),
    )


def images_api_request(fields: dict, facts: ModelFacts) -> GenerateRequest:
    """``/v1/images/generations``'s fields (JSON): one PNG as b64_json, default settings."""
    from omni_img.sampling.ar import DEFAULT_SAMPLING

    check_known(fields, IMAGES_API_FIELDS, IMAGES_API_IGNORED)
    n = number_field(fields, "n", int, 1)
    if n != 1:
        raise RequestError(400, f"n must be 1 (one image per request), got {n}")
    h, w = facts.image_size
    size = text_field(fields, "size") or "auto"
    if size not in ("auto", f"{w}x{h}"):
        raise RequestError(
            400, f"size must be auto or {w}x{h} (this model's size), got {size[:32]!r}"
        )
    response_format = text_field(fields, "response_format") or "b64_json"
    if response_format != "b64_json":
        raise RequestError(400, "response_format must be b64_json: this server keeps no image URLs")
    output_format = text_field(fields, "output_format") or "png"
    if output_format != "png":
        raise RequestError(400, f"output_format must be png, got {output_format[:16]!r}")
    streaming = bool_field(fields, "stream")
    partial = partial_images_of(fields, facts)
    return GenerateRequest(
        prompt=prompt_of(fields, facts),
        seed=seed_of(fields),
        decoder=decoder_of(fields),
        sampling=DEFAULT_SAMPLING,
        stream=streaming,
        session=session_of(fields),
        partial_images=0 if partial is None else partial,  # the API's default: none
    )
