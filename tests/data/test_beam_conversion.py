"""`omni-img data ... --beam`: the same work units on Apache Beam's DirectRunner write
the same shards as local processes, and a rerun reuses them (skipped without Beam)."""

import pytest

from omni_img.cli import main as cli
from tests.data import real_formats

pytest.importorskip("apache_beam")


def test_beam_writes_the_shards_local_processes_write(tmp_path, capsys):
    real_formats.img2dataset_shards(tmp_path / "web")
    shards = str(tmp_path / "web" / "*.tar")
    common = ["data", "webdataset", "--shards", shards, "--resolution", "32",
              "--data_dir", str(tmp_path / "out")]  # fmt: skip
    assert cli([*common, "--name", "local"]) == 0
    assert cli([*common, "--name", "beam", "--beam=--runner=DirectRunner"]) == 0
    out = capsys.readouterr().out
    assert "kept 22 of 24 rows in 2 shards" in out and "on Beam" in out

    def shard_bytes(name):
        folder = tmp_path / "out" / name / "train"
        return [p.read_bytes() for p in sorted(folder.glob("*.array_record"))]

    assert shard_bytes("beam") == shard_bytes("local") and len(shard_bytes("beam")) == 2
    assert cli([*common, "--name", "beam", "--beam=--runner=DirectRunner"]) == 0
    assert "reused 2 of 2 shards" in capsys.readouterr().out
