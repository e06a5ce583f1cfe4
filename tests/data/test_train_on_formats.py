"""The 256 px presets, shrunk, trained through `omni-img train` on each converted format
(8 fake devices): a mock TFDS imagenet2012 (tokenizer_imagenet256 -> tokenize ->
c2i_imagenet256), COCO captions, img2dataset shards and Parquet (tokenizer -> tokenize
-> t2i_256). Every run is killed mid-way and resumed, and must continue exactly: the
tokenizer on the very batches an uninterrupted pipeline gives, the generator with
every loss equal to an uninterrupted run's."""

import json
import pathlib

import numpy as np
import pytest

from omni_img.cli import main as cli
from omni_img.training import fit as fit_module
from tests.data import real_formats

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 4  # checkpoints at 2 and 4; the kill comes before step 4

pytestmark = pytest.mark.slow  # each chain trains five times: ~1 minute on 2 cores

TOKENIZER = [
    "--config.model.image_size=32", "--config.model.patch_size=4",
    "--config.model.widths=(8,16)", "--config.model.num_res_blocks=1",
    "--config.model.high_res_blocks=0", "--config.model.codebook_size=64",
    "--config.loss.adversarial=0", "--config.compute_dtype=float32",
    "--config.eval.num_examples=16", "--config.eval.batch_size=16",
    "--config.mesh.fsdp=2",
]  # fmt: skip
GENERATOR = [
    "--config.model.grid_h=8", "--config.model.grid_w=8", "--config.model.image_vocab_size=64",
    "--config.model.dim=32", "--config.model.num_heads=2", "--config.model.dec_layers=1",
    "--config.model.mlp_dim=64", "--config.compute_dtype=float32", "--config.remat=False",
    "--config.eval.num_examples=16", "--config.eval.batch_size=16",
]  # fmt: skip
TEXT = ["--config.model.enc_layers=1", "--config.model.max_text_len=64"]
SHORT_RUN = [
    f"--config.num_steps={STEPS}", "--config.batch_size=16", "--config.log_every=1",
    "--config.checkpoint.every_steps=2", "--config.optim.warmup_steps=1",
]  # fmt: skip


class Killed(Exception):
    """Stands for the process dying mid-run (no final checkpoint)."""


def kill_before_step(step: int, monkeypatch):
    calls, original = [], fit_module._to_device

    def to_device(batch, **kwargs):
        calls.append(None)
        if len(calls) == step:
            raise Killed(f"killed before step {step}")
        return original(batch, **kwargs)

    monkeypatch.setattr(fit_module, "_to_device", to_device)


def metrics(workdir) -> list[dict]:
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


def train(preset: str, workdir, *overrides) -> None:
    args = ["train", "--config", str(ROOT / "experiments" / preset), "--workdir", str(workdir)]
    assert cli([*args, *SHORT_RUN, *overrides]) == 0


def train_killed_and_resumed(preset: str, workdir, monkeypatch, *overrides) -> None:
    with monkeypatch.context() as patch:
        kill_before_step(STEPS, patch)
        with pytest.raises(Killed):
            train(preset, workdir, *overrides)
    checkpoints = sorted(int(p.name) for p in (pathlib.Path(workdir) / "checkpoints").iterdir())
    assert checkpoints == [2]
    train(preset, workdir, *overrides)


def expected_checksums(name: str, data_dir) -> list[float]:
    """The pixel sums of the first batches the tokenizer's pipeline gives, uninterrupted."""
    from omni_img.data import source
    from omni_img.stages.tokenizer import image_example
    from omni_img.training.data import make_train_iterator

    iterator = make_train_iterator(source(name, "train", str(data_dir)), global_batch_size=16,
                                   seed=0, transform=image_example)  # fmt: skip
    return [float(next(iterator)["image"].astype(np.int64).sum()) for _ in range(STEPS)]


def tokenizer_then_generator(tmp_path, monkeypatch, name, generator_preset, generator_extra):
    """Tokenizer killed and resumed on converted `name`, its tokens, then the generator."""
    data = [f"--config.data.name={name}", f"--config.data.data_dir={tmp_path / 'tfds'}"]
    tokenizer_dir = tmp_path / "tokenizer"
    train_killed_and_resumed("tokenizer_imagenet256.py", tokenizer_dir, monkeypatch,
                             *TOKENIZER, *data)  # fmt: skip
    rows = metrics(tokenizer_dir)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    checksums = [row["input_checksum"] for row in rows]
    assert checksums == expected_checksums(name, tmp_path / "tfds")

    tokens = tmp_path / "tokens"
    code = cli(["tokenize", "--tokenizer", str(tokenizer_dir), "--split", "train", "--split",
                "validation", "--out", str(tokens), "--batch_size", "16"])  # fmt: skip
    assert code == 0
    overrides = [f"--config.data.tokenized_dir={tokens}", *GENERATOR, *generator_extra]
    train(generator_preset, tmp_path / "whole", *overrides)
    train_killed_and_resumed(generator_preset, tmp_path / "resumed", monkeypatch, *overrides)
    whole = [row["loss"] for row in metrics(tmp_path / "whole")]
    assert len(whole) == STEPS and whole[0] != whole[-1]
    assert [row["loss"] for row in metrics(tmp_path / "resumed")] == whole
    return tokens


def convert(*args) -> None:
    assert cli(["data", *args, "--resolution", "32"]) == 0


def test_mock_imagenet2012_trains_the_tokenizer_and_the_class_conditional_decoder(
    tmp_path, monkeypatch
):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=48):
        for split in ("train", "validation"):
            convert("tfds", "--dataset", "imagenet2012", "--split", split, "--name",
                    "imagenet2012_32", "--data_dir", str(tmp_path / "tfds"))  # fmt: skip
    tokens = tokenizer_then_generator(
        tmp_path, monkeypatch, "imagenet2012_32", "c2i_imagenet256.py", []
    )
    from omni_img.data.tokenized import TokenizedSource

    assert "label" in TokenizedSource(tokens, "train")[0]  # the class reaches the decoder


def test_coco_captions_train_the_text_to_image_decoder_with_a_caption_drawn_per_step(
    tmp_path, monkeypatch
):
    images, annotations = real_formats.coco_folder(tmp_path / "coco", count=40)
    for split in ("train", "validation"):
        convert("coco", "--images", str(images), "--annotations", str(annotations), "--name",
                "coco_32", "--split", split, "--data_dir", str(tmp_path / "tfds"))  # fmt: skip
    tokens = tokenizer_then_generator(tmp_path, monkeypatch, "coco_32", "t2i_256.py", TEXT)
    import grain

    from omni_img.data.tokenized import TokenizedSource
    from omni_img.stages.generator import with_drawn_caption

    records = TokenizedSource(tokens, "train")
    assert json.loads(records[0]["captions"]) == [real_formats.caption(0), "photo 0"]
    stream = with_drawn_caption(grain.MapDataset.source(records).repeat(), seed=0)
    drawn = {stream[epoch * len(records)]["caption"] for epoch in range(8)}
    assert drawn == {real_formats.caption(0), "photo 0"}  # both captions of image 0 are used


def test_img2dataset_shards_with_a_corrupt_member_train_the_text_to_image_decoder(
    tmp_path, monkeypatch
):
    real_formats.img2dataset_shards(tmp_path / "web", per_shard=16)
    for split in ("train", "validation"):
        convert("webdataset", "--shards", str(tmp_path / "web" / "*.tar"), "--name", "web_32",
                "--split", split, "--data_dir", str(tmp_path / "tfds"))  # fmt: skip
    tokenizer_then_generator(tmp_path, monkeypatch, "web_32", "t2i_256.py", TEXT)


def test_parquet_with_bad_rows_trains_the_text_to_image_decoder(tmp_path, monkeypatch):
    real_formats.parquet_file(tmp_path / "train.parquet", rows=32)
    for split in ("train", "validation"):
        convert("parquet", "--files", str(tmp_path / "train.parquet"), "--name", "hf_32",
                "--split", split, "--data_dir", str(tmp_path / "tfds"))  # fmt: skip
    tokenizer_then_generator(tmp_path, monkeypatch, "hf_32", "t2i_256.py", TEXT)
