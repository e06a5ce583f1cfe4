"""Ingestion of a user's folder: bad rows are counted with a reason, good rows land."""

import json

import numpy as np
import pytest
from PIL import Image

from omni_img.cli import main as cli


def _folder(root):
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 120, 3), np.uint8)).save(images / "good.jpg")
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(images / "sub" / "alpha.png")
    Image.new("P", (40, 40), 3).save(images / "palette.png")
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(images / "cmyk.jpg")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(
        images / "deep.png"
    )
    Image.new("RGB", (1, 1), (255, 0, 0)).save(images / "dot.png")
    whole = (images / "good.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "notes.jpg").write_bytes(b"this is not an image")
    rows = [
        {"image": "good.jpg", "caption": "noise"},
        {"image": "sub/alpha.png", "caption": "a translucent red square"},
        {"image": "palette.png", "caption": "a palette image"},
        {"image": "cmyk.jpg", "caption": "a cmyk image"},
        {"image": "deep.png", "caption": "a 16-bit ramp"},
        {"image": "dot.png", "caption": "one pixel"},
        {"image": "truncated.jpg", "caption": "half a file"},
        {"image": "notes.jpg", "caption": "text in disguise"},
        {"image": "missing.jpg", "caption": "gone"},
        {"image": "good.jpg"},
    ]
    lines = [json.dumps(r) for r in rows] + ['{"image": "good.jpg", "caption": oops}']
    captions = root / "captions.jsonl"
    captions.write_text("\n".join(lines) + "\n")
    return images, captions


def test_ingest_keeps_good_rows_and_counts_bad_ones(tmp_path, capsys):
    images, captions = _folder(tmp_path)
    data_dir = tmp_path / "tfds"
    code = cli(
        ["data", "ingest", "--images", str(images), "--captions", str(captions),
         "--name", "my_photos", "--resolution", "32", "--data_dir", str(data_dir)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "kept 5 of 11 rows" in out
    for reason in ("bad_json 1", "missing_file 1", "too_small 1", "truncated 1", "no_caption 1",
                   "not_an_image 1"):  # fmt: skip
        assert reason in out
    for conversion in ("cmyk 1", "16bit 1", "alpha 2"):
        assert conversion in out

    from omni_img.data import source

    src = source("my_photos", "train", str(data_dir))
    assert len(src) == 5
    captions_read = [src[i]["caption"].decode() for i in range(5)]
    assert captions_read == ["noise", "a translucent red square", "a palette image",
                             "a cmyk image", "a 16-bit ramp"]  # fmt: skip
    first = src[0]
    assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.uint8
    assert first["task"].decode() == "caption" and not first["source_image"].any()
    alpha = src[1]["image"].astype(int)
    assert alpha[..., 0].min() > 200 and 100 < alpha[..., 1].mean() < 160  # red over white
    cmyk = src[3]["image"].astype(int)
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60  # CMYK red stays red
    deep = src[4]["image"]
    assert deep.min() < 20 and deep.max() > 235  # 16-bit range stretched to 8 bits


def test_ingest_with_no_usable_row_exits_non_zero(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "nope.jpg", "caption": "x"}\nnot json\n')
    code = cli(["data", "ingest", "--images", str(images), "--captions", str(captions),
                "--name", "empty", "--data_dir", str(tmp_path / "tfds")])  # fmt: skip
    assert code == 1
    assert "kept 0 of 2 rows" in capsys.readouterr().out


def test_ingest_rejects_a_bad_name(tmp_path):
    from omni_img.data.ingest import ingest
    from omni_img.errors import UserError

    with pytest.raises(UserError, match="snake_case"):
        ingest(str(tmp_path), str(tmp_path / "c.jsonl"), "My Photos")
