"""The torch-file reader refuses pickles that would run code, and never runs them."""

import builtins
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.evals.metrics import torch_zip, weights


class _SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _write_zip(path, obj):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")


def _write_legacy(path, obj):
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(obj, f, protocol=2)
        pickle.dump([], f, protocol=2)


@pytest.mark.parametrize("payload", [_SystemPayload, _ExecPayload])
@pytest.mark.parametrize("writer", [_write_zip, _write_legacy])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pth_is_refused_and_not_run(tmp_path, payload, writer, nested):
    marker = tmp_path / "payload_ran"
    obj = payload(marker)
    if nested:  # hidden inside an otherwise plausible state dict
        obj = {"Conv2d_1a_3x3.conv.weight": obj}
    path = tmp_path / "pt_inception-2015-12-05-bad.pth"
    writer(path, obj)

    with pytest.raises(
        torch_zip.UnsafePickleError,
        match=r"refusing to load global (posix\.system|(__builtin__|builtins)\.exec)",
    ):
        torch_zip.load(path)
    with pytest.raises(UserError, match="refusing to load global"):
        weights.load_fid_params(str(path), verify=False)
    assert not marker.exists()


def test_plain_pickle_without_torch_layout_is_rejected(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="not a torch checkpoint"):
        torch_zip.load(path)


def test_containers_and_script_objects_are_inert():
    data = pickle.dumps({"a": [1, 2.5, "s"], "b": (None, True)}, protocol=2)
    loaded = torch_zip._unpickle(data, lambda key, dtype: None, "test")
    assert loaded == {"a": [1, 2.5, "s"], "b": (None, True)}
    unpickler = torch_zip._RestrictedUnpickler(io.BytesIO(b""), None, "test")
    cls = unpickler.find_class("__torch__.m", "Net")
    assert issubclass(cls, torch_zip.ScriptObject)
    with pytest.raises(torch_zip.UnsafePickleError):
        unpickler.find_class("torch", "load")


# ----------------------------------------------------------------------------- crafted tensors
# Stand-ins pickled under torch's names: the pickle then says `torch._utils._rebuild_tensor_v2`
# and `torch.FloatStorage`, as a torch.save file does, without torch being installed.


def _rebuild_tensor_v2(*args):
    raise AssertionError("a stand-in, never called")


class FloatStorage:
    pass


class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride, args=None):
        self.args = args or (storage, offset, size, stride, False, {})

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _torch_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    here = __name__.encode()
    data = buffer.getvalue()
    for name, module in ((b"_rebuild_tensor_v2", b"torch._utils"), (b"FloatStorage", b"torch")):
        data = data.replace(b"c%s\n%s\n" % (here, name), b"c%s\n%s\n" % (module, name))
    assert here not in data
    return data


def _write_torch_zip(path, obj, storages, compression=zipfile.ZIP_STORED):
    """A torch zip file: `obj` pickled as data.pkl and `storages` (key -> bytes)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", _torch_pickle(obj))
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)


FOUR_FLOATS = {"0": np.arange(4, dtype="<f4").tobytes()}


def test_crafted_stand_ins_load_as_a_real_tensor(tmp_path):
    path = tmp_path / "ok.pt"
    _write_torch_zip(path, {"w": _Tensor(_Storage("0", 4), 0, (2, 2), (1, 2))}, FOUR_FLOATS)
    np.testing.assert_array_equal(torch_zip.load_state_dict(path)["w"], [[0, 2], [1, 3]])


@pytest.mark.parametrize(
    "size, stride, offset, message",
    [
        # 2**40 floats (4 TiB) from a 16-byte storage: stride 0 keeps the view in bounds.
        ((2**40,), (0,), 0, "more bytes than its storage"),
        ((2**31, 2**31, 2**31), (0, 0, 0), 0, "more bytes than its storage"),
        ((-1, 4), (4, 1), 0, "negative size"),
        ((2, 2), (-1, 1), 0, "negative stride"),
        ((2, 1), (1, 2**62), 0, "stride"),
        ((2,), (1,), -1, "offset"),
        ((2,), (1,), 3, "runs past the end"),
        ((2, 2), (2,), 0, "sizes and 1 strides"),
    ],
)
def test_crafted_tensor_geometry_is_a_user_error(tmp_path, size, stride, offset, message):
    path = tmp_path / "crafted.pt"
    _write_torch_zip(path, {"w": _Tensor(_Storage("0", 4), offset, size, stride)}, FOUR_FLOATS)
    with pytest.raises(UserError, match=message):
        torch_zip.load(path)


def _malformed_pickles():
    ok = _torch_pickle({"w": _Tensor(_Storage("0", 4), 0, (4,), (1,))})
    return {
        "truncated": ok[: len(ok) // 2],
        "too few arguments": _torch_pickle({"w": _Tensor(None, 0, 0, 0, args=(1,))}),
        "size not a sequence": _torch_pickle({"w": _Tensor(_Storage("0", 4), 0, 5, (1,))}),
        "size of strings": _torch_pickle({"w": _Tensor(_Storage("0", 4), 0, ("a",), (1,))}),
        "storage missing": _torch_pickle({"w": _Tensor(_Storage("9", 4), 0, (4,), (1,))}),
        "not a storage": _torch_pickle({"w": _Tensor([1.0], 0, (1,), (1,))}),
        "bad persistent id": ok.replace(b"storage", b"stowage"),
        "call of an int": b"\x80\x02K\x01)R.",
        "state of a list": b"\x80\x02]K\x01b.",
        "ordered dict of an int": b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.",
        "garbage": b"\x80\x02\xff\xfe\xfd",
        "bytes longer than the memory": b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x.",
        "lists nested 100,000 deep": b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".",
    }


@pytest.mark.parametrize("name", sorted(_malformed_pickles()))
def test_malformed_pickle_is_a_user_error(tmp_path, name):
    path = tmp_path / "malformed.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _malformed_pickles()[name])
        archive.writestr("archive/data/0", FOUR_FLOATS["0"])
    with pytest.raises(UserError, match="malformed.pt"):
        torch_zip.load_state_dict(path)


def test_storage_that_unpacks_past_the_file_size_is_refused(tmp_path):
    # 8 MB of zeros deflate to a few KB: the storage would be larger than the file itself.
    path = tmp_path / "bomb.pt"
    tensor = _Tensor(_Storage("0", 2**21), 0, (4,), (1,))
    _write_torch_zip(path, {"w": tensor}, {"0": bytes(2**23)}, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    with pytest.raises(UserError, match="more bytes than the file"):
        torch_zip.load(path)


@pytest.mark.parametrize("count", [2**40, -5])
def test_legacy_storage_count_past_the_file_is_refused(tmp_path, count):
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(_torch_pickle({"w": _Tensor(_Storage("0", 4), 0, (4,), (1,))}))
        pickle.dump(["0"], f, protocol=2)
        f.write(struct.pack("<q", count) + FOUR_FLOATS["0"])
    with pytest.raises(UserError, match="storage 0"):
        torch_zip.load(path)


def test_legacy_tensor_loads(tmp_path):
    path = tmp_path / "legacy.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(_torch_pickle({"w": _Tensor(_Storage("0", 4), 1, (3,), (1,))}))
        pickle.dump(["0"], f, protocol=2)
        f.write(struct.pack("<q", 4) + FOUR_FLOATS["0"])
    np.testing.assert_array_equal(torch_zip.load_state_dict(path)["w"], [1, 2, 3])


def test_shared_storage_loads_but_not_rebuilt_over_and_over(tmp_path):
    storage = {"0": np.arange(2**14, dtype="<f4").tobytes()}  # 64 KiB
    whole = lambda: _Tensor(_Storage("0", 2**14), 0, (2**14,), (1,))  # noqa: E731
    tied = tmp_path / "tied.pt"
    _write_torch_zip(tied, {"embed": whole(), "head": whole()}, storage)
    loaded = torch_zip.load_state_dict(tied)
    np.testing.assert_array_equal(loaded["embed"], loaded["head"])
    over_and_over = tmp_path / "repeated.pt"
    _write_torch_zip(over_and_over, {f"w{i}": whole() for i in range(8)}, storage)
    with pytest.raises(UserError, match="more than 4 times the file's bytes"):
        torch_zip.load(over_and_over)


@pytest.mark.parametrize("zip_format", [True, False])
def test_real_torch_files_load_every_layout(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    tensors = {
        "contiguous": base, "transposed": base.transpose(0, 2), "sliced": base[:, 1:, ::2],
        "narrow": base[:, :1], "empty": torch.zeros(0, 7), "scalar": torch.tensor(3.0),
        "tied": base, "bfloat16": torch.ones(3, dtype=torch.bfloat16),
        "int64": torch.arange(5), "bool": torch.tensor([True, False]),
    }  # fmt: skip
    path = tmp_path / "real.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
    loaded = torch_zip.load_state_dict(path)
    for name, tensor in tensors.items():
        expected = tensor.to(torch.float64).numpy()
        np.testing.assert_array_equal(np.asarray(loaded[name], np.float64), expected, err_msg=name)
    # A broadcast (stride 0) tensor needs more bytes than its storage holds: refused, as
    # a crafted size would be. Weight files hold parameters, which are never broadcast.
    torch.save({"expanded": torch.ones(1, 3).expand(5, 3)}, path)
    with pytest.raises(UserError, match="more bytes than its storage"):
        torch_zip.load(path)
