"""Read tensors out of PyTorch files with NumPy only: no torch, no plain `pickle.load`.

Three layouts are understood:
- a torch zip checkpoint (`torch.save`, torch >= 1.6): `<root>/data.pkl` plus one raw
  storage per tensor under `<root>/data/<key>`;
- a TorchScript archive (`torch.jit.save`): the same zip layout, whose `data.pkl` rebuilds
  `__torch__.*` module objects that hold the tensors as attributes;
- the legacy `torch.save` stream (torch < 1.6): magic number, protocol, system info, the
  object pickle, the storage keys, then each storage as an int64 element count and bytes.

Pickles are code: a `__reduce__` payload runs on `pickle.load`. The unpickler here only
resolves the handful of globals that rebuild tensors and containers; any other global
(`os.system`, `builtins.eval`, ...) is refused before it can be called, with
`UnsafePickleError` naming it. `__torch__.*` classes become inert `ScriptObject`s that
only store the state the pickle hands them.

A file is untrusted input in every other way, too: every tensor must fit the bytes its
storage really holds (a crafted size with stride 0 cannot ask for terabytes), no storage
may unpack to more bytes than the file itself holds (torch writes storages uncompressed),
and whatever a malformed file makes the parser raise comes out as one `TorchFileError`
(a `UserError`) naming the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

import numpy as np

from omni_img.errors import UserError

try:  # ml_dtypes ships with jax; only needed for bfloat16 tensors.
    import ml_dtypes

    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    _BFLOAT16 = None

_STORAGE_DTYPES: dict[str, np.dtype | None] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": _BFLOAT16,
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class TorchFileError(UserError):
    """Not a torch file this reader understands, or a malformed one (names the file)."""


class UnsafePickleError(TorchFileError, pickle.UnpicklingError):
    """The pickle asked for something other than tensors and plain containers."""


# What parsing a malformed file can raise, besides the errors raised here on purpose: the
# unpickler's own, a call with the wrong arguments, a missing zip entry, a short read, a
# nesting too deep to walk, a declared length too large to allocate.
_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                 AttributeError, struct.error, zipfile.BadZipFile, zlib.error, OverflowError,
                 NotImplementedError, RecursionError, MemoryError)  # fmt: skip


class ScriptObject:
    """Inert stand-in for a `__torch__.*` TorchScript class: it only keeps its state."""

    def __init__(self, *args: Any) -> None:
        del args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


class _StorageType:
    """Marker for `torch.FloatStorage` & co: only its element dtype matters."""

    def __init__(self, name: str) -> None:
        if name not in _STORAGE_DTYPES or _STORAGE_DTYPES[name] is None:
            raise UnsafePickleError(f"unsupported tensor storage type torch.{name}")
        self.name = name
        self.dtype: np.dtype = _STORAGE_DTYPES[name]  # type: ignore[assignment]


def _rebuild_tensor(storage, offset, size, stride, *rest):
    """`torch._utils._rebuild_tensor_v2`: a strided view of a flat storage, copied out.

    ValueError unless the view lies inside the storage and the copy needs no more bytes
    than the storage holds: no size a file claims makes one tensor larger than that."""
    del rest  # requires_grad, backward hooks, metadata: irrelevant for inference.
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ValueError("tensor rebuilt from something that is not a storage")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"tensor storage offset {offset!r} is not an int ≥ 0")
    if len(size) != len(stride):
        raise ValueError(f"tensor has {len(size)} sizes and {len(stride)} strides")
    if any(n < 0 for n in size):
        raise ValueError(f"negative size in tensor size {size}")
    if any(s < 0 for s in stride):
        raise ValueError(f"negative stride in tensor strides {stride}")
    nbytes = math.prod(size) * storage.dtype.itemsize
    if nbytes > storage.nbytes:
        raise ValueError(
            f"tensor of size {size} needs {nbytes} bytes, more bytes than its storage holds "
            f"({storage.nbytes})"
        )
    if nbytes == 0:
        return np.zeros(size, storage.dtype)
    if any(s > storage.size for s in stride):
        raise ValueError(f"tensor stride in {stride} exceeds its storage's {storage.size} elements")
    extent = 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset + extent > storage.size:
        raise ValueError("tensor view runs past the end of its storage")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _int_tuple(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple | list) or not all(isinstance(v, int) for v in values):
        raise ValueError(f"tensor {what} {values!r:.80} is not a sequence of ints")
    return tuple(values)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    del requires_grad, backward_hooks, rest
    return data


def _skip(*args):
    del args


def _build_list(values):
    return list(values)


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


# (module, name) -> what the unpickler hands back. Everything else is refused.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch.jit._pickle", "build_intlist"): _build_list,
    ("torch.jit._pickle", "build_doublelist"): _build_list,
    ("torch.jit._pickle", "build_boollist"): _build_list,
    ("torch.jit._pickle", "build_tensorlist"): _build_list,
}


# Tensors may share a storage (tied weights: an embedding and the output head), so all the
# tensors of a file may copy out more bytes than it holds, but never more than this many
# times its size: a pickle that rebuilds one storage thousands of times is refused.
STORAGE_REUSE_LIMIT = 4


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding globals; storages come from `load_storage`.
    `max_bytes`: what all the tensors rebuilt may total (None: no limit)."""

    def __init__(
        self, file: BinaryIO, load_storage, source: str, rebuild: bool = True,
        max_bytes: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(file)
        self._load_storage = load_storage
        self._source = source
        self._rebuild = rebuild
        self._bytes_left = max_bytes

    def _rebuild_counted(self, *args) -> np.ndarray:
        tensor = _rebuild_tensor(*args)
        if self._bytes_left is not None:
            self._bytes_left -= tensor.nbytes
            if self._bytes_left < 0:
                raise ValueError(
                    f"its tensors copy out more than {STORAGE_REUSE_LIMIT} times the file's "
                    "bytes (one storage rebuilt over and over)"
                )
        return tensor

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            found = _SAFE_GLOBALS[(module, name)]
            if not self._rebuild and found in (_rebuild_tensor, _rebuild_parameter):
                return _skip
            return self._rebuild_counted if found is _rebuild_tensor else found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module.startswith("__torch__.") or module == "__torch__":
            return type(name, (ScriptObject,), {"__module__": module})
        raise UnsafePickleError(
            f"{self._source}: refusing to load global {module}.{name}: only tensors and "
            "plain containers may appear in a weights file (is it a tampered pickle?)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafePickleError(f"{self._source}: unexpected persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._source}: storage of unknown type {storage_type!r}")
        storage = self._load_storage(key, storage_type.dtype)
        view = pid[5] if len(pid) > 5 else None  # legacy: (view_key, offset, size)
        if view is not None and storage is not None:
            _, offset, view_size = (int(value) for value in view)
            if offset < 0 or view_size < 0 or offset + view_size > storage.size:
                raise ValueError(f"storage view {view!r:.80} runs outside storage {key}")
            storage = storage[offset : offset + view_size]
        return storage


def _unpickle(data: bytes, load_storage, source: str, max_bytes: int | None = None) -> Any:
    return _RestrictedUnpickler(io.BytesIO(data), load_storage, source, max_bytes=max_bytes).load()


def _load_zip(path: str, source: str) -> Any:
    file_bytes = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:

        def read(name: str) -> bytes:
            entry = archive.getinfo(name)  # KeyError for an entry the pickle names but lacks
            if entry.file_size > file_bytes:
                raise TorchFileError(
                    f"{source}: {name} unpacks to {entry.file_size} bytes, more bytes than the "
                    f"file holds ({file_bytes}); torch.save stores its entries uncompressed"
                )
            return archive.read(entry)

        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise TorchFileError(f"{path}: a zip without <root>/data.pkl is not a torch file")
        root = pkl[0].split("/")[0]
        byteorder = f"{root}/byteorder"
        if byteorder in names and read(byteorder).strip() != b"little":
            raise TorchFileError(f"{path}: big-endian torch files are not supported")
        cache: dict[str, np.ndarray] = {}

        def load_storage(key: str, dtype: np.dtype) -> np.ndarray:
            if key not in cache:
                raw = read(f"{root}/data/{key}")
                cache[key] = np.frombuffer(raw, dtype=dtype)
            return cache[key]

        return _unpickle(read(pkl[0]), load_storage, source, STORAGE_REUSE_LIMIT * file_bytes)


def _load_legacy(path: str, source: str) -> Any:
    # All of it at once: every read below is then bounded by the file's own size (a
    # declared length past it reads short instead of allocating it).
    with open(path, "rb") as file:
        f = io.BytesIO(file.read())
    try:
        header = [_unpickle_plain(f, source) for _ in range(3)]
    except UnsafePickleError:
        raise
    except _PARSE_ERRORS as error:
        raise TorchFileError(f"{path}: not a torch checkpoint ({_describe(error)})") from None
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise TorchFileError(f"{path}: not a torch checkpoint (no zip, no legacy magic)")
    # The storages' bytes follow the object pickle and their element sizes are only
    # named inside it: a first pass (tensors not rebuilt) collects the dtypes.
    obj_start = f.tell()
    dtypes: dict[str, np.dtype] = {}

    def note_storage(key: str, dtype: np.dtype) -> None:
        dtypes[key] = dtype

    _RestrictedUnpickler(f, note_storage, source, rebuild=False).load()
    keys = _unpickle_plain(f, source)
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        dtype = dtypes[str(key)]
        left = len(f.getbuffer()) - f.tell()
        if count < 0 or count * dtype.itemsize > left:
            raise TorchFileError(
                f"{source}: storage {key} declares {count} elements of {dtype.itemsize} bytes, "
                f"the file has {left} bytes left"
            )
        storages[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    f.seek(obj_start)
    max_bytes = STORAGE_REUSE_LIMIT * len(f.getbuffer())
    return _RestrictedUnpickler(
        f, lambda key, dtype: storages[key], source, max_bytes=max_bytes
    ).load()


def _unpickle_plain(f: BinaryIO, source: str) -> Any:
    """Header records of the legacy format: ints, dicts, lists — refused otherwise."""

    def no_storage(key, dtype):
        raise UnsafePickleError(f"{source}: unexpected storage in a header record")

    return _RestrictedUnpickler(f, no_storage, source).load()


def _describe(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "MemoryError: a length it declares is too large to allocate"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text:.200}" if text else type(error).__name__


def load(path: str | os.PathLike) -> Any:
    """Load a torch file's object tree with tensors as NumPy arrays (never runs its code).

    Raises `UnsafePickleError` for a pickle that names any global besides tensor and
    container rebuilders, and `TorchFileError` (both are `UserError`s naming the file) for
    a file that is not a torch file, is malformed, or asks for more bytes than it holds.
    """
    path = os.fspath(path)
    source = os.path.basename(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, source)
        return _load_legacy(path, source)
    except TorchFileError:
        raise
    except OSError as error:
        raise TorchFileError(f"{path}: cannot read it ({error.strerror or error})") from None
    except _PARSE_ERRORS as error:
        raise TorchFileError(f"{source}: malformed torch file ({_describe(error)})") from None


def flatten_tensors(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Dotted-name -> array for every tensor in a loaded tree (dicts, lists, ScriptObjects).

    A TorchScript module's attributes become `net.layers.conv.weight`-style names; a state
    dict comes back unchanged.
    """
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, np.ndarray):
        out[prefix.rstrip(".")] = tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten_tensors(value, f"{prefix}{key}."))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            out.update(flatten_tensors(value, f"{prefix}{i}."))
    elif isinstance(tree, ScriptObject):
        out.update(flatten_tensors(vars(tree), prefix))
    return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a torch checkpoint or TorchScript archive, by dotted name."""
    tree = load(path)
    try:
        return flatten_tensors(tree)
    except RecursionError:
        name = os.path.basename(os.fspath(path))
        raise TorchFileError(f"{name}: malformed torch file (objects nested too deep)") from None
