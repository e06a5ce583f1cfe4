"""PNG bytes of a generated image with both provenance records: text chunks and a signed
C2PA manifest (see ``c2pa_png``). What ``generate`` writes and ``serve`` sends."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

from omni_img.provenance.c2pa_png import PngSigner, manifest_definition
from omni_img.provenance.chain import SigningCredentials, signing_credentials

# Text chunks that describe the file, not the generation: kept out of the C2PA assertion.
NOT_GENERATION = ("Software", "Comment", "ai_generated", "partial")


def encode_png(image, text: dict[str, str]) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes with ``text`` as tEXt/iTXt chunks."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)  # non-Latin-1 values become iTXt chunks
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def generation_record(text: dict[str, str]) -> dict[str, Any]:
    """The C2PA generation assertion from the text chunks (sampling as an object)."""
    record: dict[str, Any] = {k: v for k, v in text.items() if k not in NOT_GENERATION}
    if "sampling" in record:
        record["sampling"] = json.loads(record["sampling"])
    return record


@dataclasses.dataclass
class Stamper:
    """Signs every PNG with one set of credentials; ``include_prompt=False`` leaves the
    prompt out of both records."""

    credentials: SigningCredentials
    include_prompt: bool = True

    @classmethod
    def from_paths(cls, cert: str | None, key: str | None, include_prompt: bool = True):
        return cls(signing_credentials(cert, key), include_prompt)

    def png(
        self,
        image,
        text: dict[str, str],
        *,
        source: bytes | None = None,
        title: str = "image.png",
    ) -> bytes:
        """PNG bytes: text chunks, then the signed manifest (``source``: the bytes of the
        image that was edited, recorded as an ingredient)."""
        if not self.include_prompt:
            text = {k: v for k, v in text.items() if k != "prompt"}
        manifest = manifest_definition(generation_record(text), title=title)
        return PngSigner(self.credentials).sign(encode_png(image, text), manifest, source)
