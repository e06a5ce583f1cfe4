"""Request bodies -> a dict of fields, bounded in size; every malformed body is a 4xx.

Three encodings: ``application/json`` (an object; an image as base64 in ``image``),
``multipart/form-data`` (fields and an ``image`` file part) and
``application/x-www-form-urlencoded``. Form fields stay bytes until a field is read, so a
prompt that is not UTF-8 is refused by name instead of silently re-decoded as Latin-1
(what Starlette's form parser does).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import urllib.parse
from typing import Any

from omni_img.serve.errors import RequestError

MAX_FORM_PARTS = 32


@dataclasses.dataclass
class Upload:
    """An uploaded file: its bytes and the name the client gave it."""

    data: bytes
    filename: str = "upload"


async def read_body(request, limit: int) -> bytes:
    """The whole body, or 413 once it passes ``limit`` bytes (Content-Length first)."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared[:32]!r} is not a number")
        if int(declared) > limit:
            raise RequestError(413, f"request body is {int(declared)} bytes, over {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"request body is over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "the client closed the request before its body ended") from None
    return b"".join(chunks)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_fields(content_type: str, body: bytes) -> dict[str, Any]:
    """The fields of a body by its content type (JSON values, or bytes / Upload for forms)."""
    kind = media_type(content_type)
    if kind in ("application/json", ""):
        return _json_fields(body)
    if kind == "multipart/form-data":
        return _multipart_fields(content_type, body)
    if kind == "application/x-www-form-urlencoded":
        return _urlencoded_fields(body)
    raise RequestError(
        415,
        f"unsupported content type {kind[:64]!r}; send application/json or multipart/form-data",
    )


def _json_fields(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise RequestError(400, "request body is empty; send a JSON object with a prompt")
    try:
        fields = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestError(400, f"body is not valid UTF-8 (byte {error.start})") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise RequestError(400, f"body is not valid JSON: {getattr(error, 'msg', error)}") from None
    if not isinstance(fields, dict):
        raise RequestError(400, f"body must be a JSON object, got {type(fields).__name__}")
    if isinstance(fields.get("image"), str):
        fields["image"] = Upload(decode_base64(fields["image"]), "image")
    return fields


def decode_base64(text: str) -> bytes:
    """Base64 (optionally a data: URL) -> bytes; 400 when it is not base64."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "image is not valid base64") from None


def _urlencoded_fields(body: bytes) -> dict[str, Any]:
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=MAX_FORM_PARTS,
            encoding="latin-1",
        )  # fmt: skip
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestError(400, f"form body is malformed: {error}") from None
    return {name: value.encode("latin-1") for name, value in pairs}


def _multipart_fields(content_type: str, body: bytes) -> dict[str, Any]:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart body without a boundary in its Content-Type")
    parts: list[dict] = []
    header: dict[str, bytearray] = {}

    def begin():
        if len(parts) >= MAX_FORM_PARTS:
            raise RequestError(400, f"form has more than {MAX_FORM_PARTS} parts")
        parts.append({"headers": {}, "data": bytearray()})

    def header_field(data, start, end):
        header.setdefault("field", bytearray()).extend(data[start:end])

    def header_value(data, start, end):
        header.setdefault("value", bytearray()).extend(data[start:end])

    def header_end():
        name = bytes(header.pop("field", b"")).decode("latin-1").strip().lower()
        parts[-1]["headers"][name] = bytes(header.pop("value", b""))

    callbacks = {
        "on_part_begin": begin,
        "on_part_data": lambda data, start, end: parts[-1]["data"].extend(data[start:end]),
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError, IndexError) as error:
        raise RequestError(400, f"multipart body is malformed: {error}") from None
    if parser.state != MultipartState.END:
        raise RequestError(400, "multipart body ends before its closing boundary")
    return _parts_to_fields(parts)


def _parts_to_fields(parts: list[dict]) -> dict[str, Any]:
    from python_multipart.multipart import parse_options_header

    fields: dict[str, Any] = {}
    for part in parts:
        _, options = parse_options_header(part["headers"].get("content-disposition", b""))
        name = options.get(b"name", b"").decode("latin-1")
        if not name:
            raise RequestError(400, "a multipart part has no name in its Content-Disposition")
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")[:128] or "upload"
            fields[name] = Upload(bytes(part["data"]), filename)
        else:
            fields[name] = bytes(part["data"])
    return fields
