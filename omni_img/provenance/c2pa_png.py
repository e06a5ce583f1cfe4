"""C2PA manifests on the PNGs omni_img writes, made and read with ``c2pa-python``.

A manifest records, under the signer's certificate: the claim generator (omni_img and its
version), a ``c2pa.created`` action whose digitalSourceType is IPTC's
trainedAlgorithmicMedia, an ``org.omni_img.generation`` assertion (bundle id, seed,
decoder, sampling settings, and the prompt unless left out), and, for an edit, the source
image as an ingredient (relationship ``inputTo``: an input of the model, not a parent
whose pixels were kept). The manifest's hash binds every pixel: change one and the
manifest fails validation (``assertion.dataHash.mismatch``).

Signing is offline: no timestamp authority is asked, so the signature's time is the
signer's claim alone. The PNG's text chunks (``export.generate.provenance``) stay.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

from omni_img.errors import UserError
from omni_img.provenance.chain import SigningCredentials

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "org.omni_img.generation"
# Thumbnails would triple a small PNG and cost most of the signing time.
BUILDER_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}
INGREDIENT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def _c2pa():
    try:
        import c2pa
    except ImportError:
        raise UserError("C2PA signing needs c2pa-python: pip install c2pa-python") from None
    return c2pa


def manifest_definition(
    generation: dict[str, Any], *, title: str = "image.png", include_prompt: bool = True
) -> dict[str, Any]:
    """The manifest definition for a generated PNG; ``generation`` holds bundle_id, seed,
    decoder, sampling, prompt and anything else worth recording."""
    from omni_img import __version__

    data = dict(generation)
    if not include_prompt:
        data.pop("prompt", None)
    agent = {"name": "omni_img", "version": __version__}
    created = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": agent,
    }
    return {
        "claim_generator_info": [agent],
        "title": title,
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [created]}},
            {"label": GENERATION_LABEL, "data": data},
        ],
    }


@dataclasses.dataclass
class PngSigner:
    """Signs PNG bytes with one set of credentials (the native signer is made per call:
    a c2pa Builder consumes nothing of it, but it is cheap and keeps threads apart)."""

    credentials: SigningCredentials

    def _signer(self):
        c2pa = _c2pa()
        info = c2pa.C2paSignerInfo(
            self.credentials.alg, self.credentials.chain_pem, self.credentials.key_pem, None
        )
        try:
            return c2pa.Signer.from_info(info)
        except c2pa.C2paError as error:
            raise UserError(f"cannot sign C2PA manifests with these credentials: {error}") from None

    def sign(self, png: bytes, manifest: dict[str, Any], source: bytes | None = None) -> bytes:
        """``png`` with ``manifest`` embedded and signed; ``source`` (an image file's bytes)
        becomes the ingredient the image was made from."""
        c2pa = _c2pa()
        context = c2pa.Context.from_dict(BUILDER_SETTINGS)
        out = io.BytesIO()
        try:
            with c2pa.Builder(manifest, context=context) as builder:
                if source is not None:
                    _add_source(builder, source)
                with self._signer() as signer:
                    builder.sign(signer, "image/png", io.BytesIO(png), out)
        except c2pa.C2paError as error:
            raise UserError(f"C2PA signing failed: {error}") from None
        return out.getvalue()


def _add_source(builder, source: bytes) -> None:
    """The source image as an ``inputTo`` ingredient; a format c2pa cannot read is
    re-encoded as PNG (its pixels are what the model saw)."""
    from PIL import Image

    c2pa = _c2pa()
    ingredient = {"title": "source image", "relationship": "inputTo"}
    with Image.open(io.BytesIO(source)) as image:
        mime = INGREDIENT_FORMATS.get(image.format or "")
        if mime is None:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            source, mime = buffer.getvalue(), "image/png"
    try:
        builder.add_ingredient(ingredient, mime, io.BytesIO(source))
    except c2pa.C2paError:
        with Image.open(io.BytesIO(source)) as image:
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
        builder.add_ingredient(ingredient, "image/png", io.BytesIO(buffer.getvalue()))


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class ManifestReport:
    """What a reader found: the validation state (Valid, Invalid, Trusted), the active
    manifest, and the failure codes (signingCredential.untrusted for the test chain)."""

    state: str
    manifest: dict[str, Any]
    failures: tuple[str, ...]

    @property
    def intact(self) -> bool:
        """Hashes and signature check out (whether or not the signer is trusted)."""
        return self.state in ("Valid", "Trusted")

    def assertion(self, label: str) -> dict[str, Any] | None:
        for entry in self.manifest.get("assertions", []):
            if entry.get("label", "").split(".v")[0] == label:
                return entry.get("data")
        return None


def read_manifest(png: bytes, trust_anchors_pem: bytes | None = None) -> ManifestReport | None:
    """The active C2PA manifest of PNG bytes and its validation (None: no manifest).
    ``trust_anchors_pem``: CA certificates to trust, e.g. the local test chain's."""
    c2pa = _c2pa()
    context = None
    if trust_anchors_pem:
        context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_anchors_pem.decode()}})
    try:
        reader = c2pa.Reader.try_create("image/png", io.BytesIO(png), None, context)
    except c2pa.C2paError as error:
        raise UserError(f"cannot read the C2PA manifest: {error}") from None
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        results = store.get("validation_results", {}).get("activeManifest", {})
        return ManifestReport(
            state=store.get("validation_state", ""),
            manifest=reader.get_active_manifest() or {},
            failures=tuple(item["code"] for item in results.get("failure", [])),
        )
