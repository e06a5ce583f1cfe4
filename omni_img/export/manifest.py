"""A bundle's manifest: what it lists, how it is made, and how a bundle is verified.

The manifest lists every other file of the bundle with its sha256 and size; its
`bundle_id` is the sha256 of the rest of the manifest. Hashes detect *corruption* — a
truncated copy, a flipped bit, a file lost, an edit that did not recompute them — not
tampering: whoever edits a file can recompute its sha256 and the bundle_id, and the
bundle still verifies. Load bundles only from a source you trust.

Every field is checked before any is used: a missing or ill-typed field is a one-line
UserError naming the field and the bundle, never a KeyError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from omni_img.errors import UserError

FORMAT = "omni_img.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STAGES = ("tokenizer", "generator", "rolling")
REQUIRED = ("model.json", "text_tokenizer.json", *(f"params/{s}.npz" for s in STAGES))
DTYPES = ("float32", "bfloat16")
# name -> (what it computes, arguments). All at batch 1; keys are raw uint32[2] PRNG keys.
EXPORTED = {
    "ar_sample_b1": "tokens (1,h,w) int32 <- (generator params, conditioning dict, key); "
    "the AR sampler with the manifest's sampling config",
    "text_embed_b1": "(E (1,S,D), mask (1,S)) <- (generator params, conditioning dict)",
    "rolling_decode_b1": "image (1,H,W,3) in [-1,1] <- (rolling params, tokens, E, mask, key)",
    "sequential_decode_b1": "image (1,H,W,3) in [-1,1] <- (rolling params, tokens, E, mask, key)",
    "conv_decode_b1": "image (1,H,W,3) in [-1,1] <- (tokenizer params, tokens)",
    "tokenize_b1": "tokens (1,h,w) int32 <- (tokenizer params, image (1,H,W,3) uint8)",
}

# field -> what it must hold (see `require`); checked in this order, `format` first so a
# JSON file of another kind is named as such.
FIELDS = {
    "format": str, "format_version": int, "omni_img_version": str, "jax_version": str,
    "dtype": DTYPES, "files": dict, "exported": dict, "sampling": dict, "bundle_id": str,
}  # fmt: skip
FILE_FIELDS = {"sha256": str, "bytes": int}
EXPORTED_FIELDS = {"file": str, "computes": str, "platforms": list}
KINDS = {str: "a string", int: "an int", dict: "an object", list: "a list of strings"}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_id(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its bundle_id: it detects a
    manifest corrupted since export, not one edited on purpose (anyone can recompute it)."""
    body = {k: v for k, v in manifest.items() if k != "bundle_id"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def make_manifest(
    files: Mapping[str, bytes], dtype: str, sampling, platforms: Mapping[str, list] | None = None
) -> dict[str, Any]:
    import jax

    from omni_img import __version__

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "omni_img_version": __version__,
        "jax_version": jax.__version__,
        "dtype": dtype,
        "files": {p: {"sha256": _sha256(b), "bytes": len(b)} for p, b in sorted(files.items())},
        "exported": {
            name: {
                "file": f"stablehlo/{name}.bin",
                "computes": what,
                "platforms": (platforms or {}).get(name, [jax.default_backend()]),
            }
            for name, what in EXPORTED.items()
        },
        "sampling": dataclasses.asdict(sampling),
    }
    manifest["bundle_id"] = bundle_id(manifest)
    return manifest


# ----------------------------------------------------------------------------- fields


def require(mapping: Mapping[str, Any], key: str, kind, where: str, field: str = "") -> Any:
    """`mapping[key]` if it is there and of `kind` (a type; or a tuple of the strings
    allowed); else a one-line UserError naming the field (`field`, default `key`) in
    `where` ('bundle B: FILE')."""
    field = field or key
    if key not in mapping:
        raise UserError(f"{where} has no field {field}")
    value = mapping[key]
    expected = str if isinstance(kind, tuple) else kind
    wrong = isinstance(value, bool) or not isinstance(value, expected)
    if expected is list and not wrong:
        wrong = not all(isinstance(item, str) for item in value)
    if wrong:
        got = f"{type(value).__name__} {value!r:.40}"
        raise UserError(f"{where} field {field} must be {KINDS[expected]}, got {got}")
    if isinstance(kind, tuple) and value not in kind:
        allowed = ", ".join(kind)
        raise UserError(f"{where} field {field} must be one of {allowed}, got {value!r:.40}")
    return value


def check_fields(mapping, fields: Mapping[str, Any], where: str, parent: str = "") -> None:
    """`require` every field of `fields` in `mapping` (the entry `parent`, if nested)."""
    for key, kind in fields.items():
        require(mapping, key, kind, where, f"{parent}.{key}" if parent else key)


def check_manifest(manifest: Any, root: pathlib.Path) -> None:
    """Every field of a parsed manifest present and of its type, the bundle id matching."""
    where = f"bundle {root}: {MANIFEST}"
    if not isinstance(manifest, dict):
        raise UserError(f"{where} is not an omni_img bundle manifest (not a JSON object)")
    if require(manifest, "format", str, where) != FORMAT:
        raise UserError(f"{where} is not an omni_img bundle manifest")
    version = require(manifest, "format_version", int, where)
    if version != FORMAT_VERSION:
        raise UserError(
            f"bundle {root}: format version {version}, this omni_img reads version {FORMAT_VERSION}"
        )
    check_fields(manifest, FIELDS, where)
    for group, fields in (("files", FILE_FIELDS), ("exported", EXPORTED_FIELDS)):
        for key in manifest[group]:
            entry = f"{group}[{key!r}]"
            require(manifest[group], key, dict, where, entry)
            check_fields(manifest[group][key], fields, where, entry)
    if manifest["bundle_id"] != bundle_id(manifest):
        raise UserError(f"{where} is corrupt (its bundle_id does not match its content)")


# ----------------------------------------------------------------------------- verify


def verify_bundle(path: str | pathlib.Path) -> dict[str, Any]:
    """The manifest of a complete bundle whose files are as exported (no corruption);
    otherwise a UserError naming the file or field."""
    root = pathlib.Path(path)
    if not root.is_dir():
        raise UserError(f"bundle {root} does not exist (or is not a directory)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"bundle {root} has no {MANIFEST}: incomplete or not a bundle")
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"bundle {root}: {MANIFEST} is corrupt (not valid JSON)") from None
    check_manifest(manifest, root)
    files = manifest["files"]
    needed = [*REQUIRED, *(entry["file"] for entry in manifest["exported"].values())]
    for rel in needed:
        if rel not in files:
            raise UserError(f"bundle {root}: {MANIFEST} does not list the required file {rel}")
    for rel, entry in files.items():
        file = root / rel
        if not file.is_file():
            raise UserError(f"bundle {root}: file {rel} is missing")
        if file.stat().st_size != entry["bytes"]:
            raise UserError(
                f"bundle {root}: file {rel} is corrupt: {file.stat().st_size} bytes, the "
                f"manifest says {entry['bytes']}"
            )
        if file_sha256(file) != entry["sha256"]:
            raise UserError(f"bundle {root}: file {rel} is corrupt (it fails its sha256 check)")
    return manifest
