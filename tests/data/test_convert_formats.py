"""`omni-img data tfds|coco|webdataset|parquet`: bad rows counted and skipped, the same
dataset from 1 or 2 processes, interrupted conversions resumed, presets that say how to
make their data."""

import json
import pathlib

import numpy as np
import pytest

from omni_img.cli import main as cli
from omni_img.data import conversion, source
from omni_img.errors import UserError
from tests.data import real_formats

ROOT = pathlib.Path(__file__).resolve().parents[2]


def convert(capsys, *args):
    code = cli(["data", *args, "--resolution", "32"])
    return code, capsys.readouterr().out


def shard_bytes(directory, split="train"):
    return {p.name: p.read_bytes() for p in sorted((directory / split).glob("*.array_record"))}


def test_coco_keeps_every_caption_and_two_processes_write_the_same_shards(tmp_path, capsys):
    images, annotations = real_formats.coco_folder(tmp_path / "coco")
    common = ["--images", str(images), "--annotations", str(annotations), "--shard_size", "10"]
    code, out = convert(capsys, "coco", *common, "--name", "one", "--data_dir", str(tmp_path))
    assert code == 0, out
    assert "kept 21 of 24 rows in 3 shards" in out
    assert "skipped: missing_file 1, no_caption 1, not_an_image 1" in out
    code, out = convert(capsys, "coco", *common, "--name", "two", "--data_dir", str(tmp_path),
                        "--processes", "2")  # fmt: skip
    assert code == 0, out
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")

    src = source("one", "train", str(tmp_path))
    assert len(src) == 21
    first = src[0]
    assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.uint8
    assert json.loads(first["captions"]) == [real_formats.caption(0), "photo 0"]
    assert first["caption"] == real_formats.caption(0) and first["task"] == "caption"
    assert "label" not in first  # COCO captions have no classes
    assert [src[i]["key"] for i in (2, 3, 4)] == [f"{i:012d}.jpg" for i in (2, 4, 6)]


def test_an_interrupted_conversion_redoes_only_the_unfinished_units(tmp_path, capsys,
                                                                    monkeypatch):  # fmt: skip
    paths = real_formats.img2dataset_shards(tmp_path / "web", shards=3, per_shard=8)
    args = ["webdataset", "--shards", str(tmp_path / "web" / "*.tar"), "--name", "web",
            "--data_dir", str(tmp_path / "out")]  # fmt: skip
    original, calls = conversion.convert_unit, []

    def dies_on_the_third_unit(job, unit):
        calls.append(unit)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C, mid-conversion
        return original(job, unit)

    monkeypatch.setattr(conversion, "convert_unit", dies_on_the_third_unit)
    assert cli(["data", *args, "--resolution", "32"]) == 130  # "interrupted"
    directory = tmp_path / "out" / "web"
    assert not (directory / "train.json").exists()  # not readable as a dataset yet
    with pytest.raises(UserError, match="is not converted"):
        source("web", "train", str(tmp_path / "out"))
    calls.clear()
    code, out = convert(capsys, *args)
    assert code == 0, out
    assert calls == [2] and "reused 2 of 3 shards" in out
    assert len(source("web", "train", str(tmp_path / "out"))) == 22  # 24 less 2 bad rows
    assert len(paths) == 3
    # The same name with other settings is refused, not mixed into the shards.
    assert cli(["data", *args, "--resolution", "64"]) == 2
    assert "other settings (resolution 32 -> 64)" in capsys.readouterr().err


def test_webdataset_skips_a_corrupt_member_and_keeps_a_broken_tar_s_head(tmp_path, capsys):
    first, second = real_formats.img2dataset_shards(tmp_path / "web")
    whole = second.read_bytes()
    second.write_bytes(whole[: len(whole) // 2])  # cut mid-archive, like a failed copy
    code, out = convert(capsys, "webdataset", "--shards", str(first), str(second),
                        "--name", "web", "--data_dir", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "broken_tar 1" in out and "not_an_image 1" in out and "no_caption 1" in out
    src = source("web", "train", str(tmp_path))
    keys = [src[i]["key"] for i in range(len(src))]
    assert keys[:4] == [f"00000.tar:00000{i:04d}" for i in (0, 1, 2, 3)]
    assert "00000.tar:000000004" not in keys and "00000.tar:000000006" not in keys
    assert 10 + 1 <= len(src) < 10 + 12  # all good samples of the first, some of the second
    assert src[0]["caption"] == real_formats.caption(0)


def test_parquet_counts_rows_without_image_or_caption(tmp_path, capsys):
    path = real_formats.parquet_file(tmp_path / "train-00000.parquet")
    files = str(tmp_path / "*.parquet")
    code, out = convert(capsys, "parquet", "--files", files, "--name", "hf",
                        "--data_dir", str(tmp_path), "--processes", "2")  # fmt: skip
    assert code == 0, out
    assert "kept 21 of 24 rows in 3 shards" in out  # 24 rows in row groups of 8
    assert "skipped: no_caption 1, no_image 1, not_an_image 1" in out
    src = source("hf", "train", str(tmp_path))
    assert src[2]["caption"] == real_formats.caption(3)  # row 2 had no image bytes
    code = cli(["data", "parquet", "--files", str(path), "--name", "hf2",
                "--caption_column", "caption", "--data_dir", str(tmp_path)])  # fmt: skip
    assert code == 2 and "has no column 'caption'" in capsys.readouterr().err


def test_tfds_mock_imagenet_keeps_labels_and_fills_a_caption_template(tmp_path, capsys):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        code, out = convert(capsys, "tfds", "--dataset", "imagenet2012", "--split", "validation",
                            "--name", "inet", "--data_dir", str(tmp_path), "--shard_size", "8",
                            "--caption_template", "a photo of a {label}")  # fmt: skip
        reference = tfds.data_source("imagenet2012", split="validation")
        labels = [int(reference[i]["label"]) for i in range(30)]
        small = [min(reference[i]["image"].shape[:2]) < 16 for i in range(30)]
        names = tfds.builder("imagenet2012").info.features["label"].names
    assert code == 0, out
    kept = [i for i in range(30) if not small[i]]
    assert f"kept {len(kept)} of 30 rows in 4 shards" in out
    assert f"too_small {30 - len(kept)}" in out  # the mock's images are 5-50 px
    src = source("inet", "validation", str(tmp_path))
    assert [src[i]["label"] for i in range(len(src))] == [labels[i] for i in kept]
    assert src[0]["caption"] == f"a photo of a {names[labels[kept[0]]]}"
    assert src[0]["key"] == f"validation[{kept[0]}]"


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("tokenizer_imagenet256.py", "omni-img data tfds --dataset imagenet2012"),
        ("c2i_imagenet256.py", "config.data.tokenized_dir is empty: no token grids of imagenet"),
        ("t2i_256.py", "omni-img data coco --images train2017"),
        ("generator_tiny.py", "omni-img tokenize --tokenizer runs/tokenizer_tiny"),
    ],
)
def test_presets_name_their_data_and_stop_before_compiling(preset, expected, tmp_path,
                                                           monkeypatch, capsys):  # fmt: skip
    from omni_img.trainers import generator, tokenizer

    def must_not_compile(*args, **kwargs):
        raise AssertionError("the run compiled before finding its data missing")

    for trainer in (generator, tokenizer):
        monkeypatch.setattr(trainer, "fit", must_not_compile)
    code = cli(["train", "--config", str(ROOT / "experiments" / preset), "--workdir",
                str(tmp_path / "run"), f"--config.data.data_dir={tmp_path}",
                *([f"--config.data.tokenized_dir={tmp_path / 'none'}"]
                  if preset == "generator_tiny.py" else [])])  # fmt: skip
    message = capsys.readouterr().err
    assert code == 2, message
    assert expected in message and "prepare it with:" in message
    assert message.count("\n") == 1  # one line
