"""The torch-file reader refuses pickles that would run code, and never runs them."""

import builtins
import io
import os
import pickle
import zipfile

import pytest

from omni_img.errors import UserError
from omni_img.evals import torch_zip, weights


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
    with pytest.raises(ValueError, match="not a torch checkpoint"):
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
