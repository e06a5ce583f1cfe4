"""A NaN at a chosen step stops the run there without saving it (or, with
config.nonfinite=skip, skips the batch and counts it); corrupt records are skipped,
counted and reported, and the run finishes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from omni_img.errors import UserError
from omni_img.stages import tokenizer as tokenizer_stage
from omni_img.trainers import tokenizer
from omni_img.training.data import make_train_iterator
from tests.chaos.damage import flip_bytes
from tests.support.synthetic import SyntheticSource
from tests.support.tiny_configs import tiny_tokenizer_config

pytestmark = pytest.mark.chaos
POISONED_STEP = 4  # a save step: the save must not happen


def indices_read_at(step: int, config) -> set[int]:
    """The record indices of the batch the run reads at `step` (1-based)."""
    iterator = make_train_iterator(
        SyntheticSource(),
        global_batch_size=config.batch_size,
        seed=config.seed,
        transform=lambda record: {"i": record["index"]},
    )
    for _ in range(step - 1):
        next(iterator)
    return set(next(iterator)["i"].tolist())


class PoisonSource(SyntheticSource):
    """Black images at the given indices: the poisoned loss below turns them into NaN."""

    def __init__(self, poisoned: set[int]):
        super().__init__()
        self.poisoned = poisoned

    def __getitem__(self, index):
        record = super().__getitem__(index)
        if int(index) in self.poisoned:
            record["image"] = np.zeros_like(record["image"])
        return record


def nan_on_black_images(loss_fn):
    def poisoned(params, batch, rng, **kwargs):
        loss, metrics = loss_fn(params, batch, rng, **kwargs)
        black = jnp.any(jnp.all(batch["image"] == 0, axis=(1, 2, 3)))
        return loss * jnp.where(black, jnp.nan, 1.0), metrics

    return poisoned


def _train_poisoned(workdir, monkeypatch, **overrides):
    config = tiny_tokenizer_config(num_steps=6, **overrides)
    poisoned = nan_on_black_images(tokenizer_stage.tokenizer_loss)
    monkeypatch.setattr(tokenizer_stage, "tokenizer_loss", poisoned)
    source = PoisonSource(indices_read_at(POISONED_STEP, config))
    return tokenizer.train(config, str(workdir), train_source=source,
                           eval_source=SyntheticSource(16))  # fmt: skip


def test_nan_stops_at_its_step_without_saving_it(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    with pytest.raises(UserError) as error:
        _train_poisoned(workdir, monkeypatch)
    message = str(error.value)
    assert "\n" not in message and f"at step {POISONED_STEP}" in message, message
    assert "non-finite loss nan" in message and "the last checkpoint is 2" in message, message
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2]
    state = tokenizer_stage.restore_state(tiny_tokenizer_config(num_steps=6), str(workdir))
    assert int(state.step) == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


@pytest.mark.slow
def test_nan_batch_is_skipped_and_counted_when_asked(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    report = _train_poisoned(workdir, monkeypatch, nonfinite="skip")
    assert report["steps"] == 6 and report["nonfinite_skipped"] == 1
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    skipped = {r["step"]: r["nonfinite_skipped"] for r in records if "nonfinite_skipped" in r}
    assert skipped == {s: float(s == POISONED_STEP) for s in range(1, 7)}
    assert [r["nonfinite_skipped_total"] for r in records if "steps_run" in r] == [1]
    state = tokenizer_stage.restore_state(tiny_tokenizer_config(num_steps=6), str(workdir))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def _image_folder(root, count: int):
    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    for index in range(count):
        rng = np.random.default_rng(index)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(images / f"{index}.png")
        rows.append({"image": f"{index}.png", "caption": f"noise {index}"})
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows.append({"image": "broken.png", "caption": "an undecodable file"})
    captions = root / "captions.jsonl"
    captions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return images, captions


@pytest.mark.slow
def test_corrupt_records_are_skipped_counted_and_reported(tmp_path, capfd):
    from omni_img.data.ingest import ingest
    from omni_img.data.reading import source

    images, captions = _image_folder(tmp_path, count=48)
    data_dir = tmp_path / "tfds"
    report, _ = ingest(str(images), str(captions), "chaos_photos", resolution=32,
                       data_dir=str(data_dir))  # fmt: skip
    assert report.kept == 48 and report.skipped["not_an_image"] == 1  # the ingest skips it
    shards = sorted(data_dir.rglob("*.array_record*"))
    assert len(shards) == 1
    flip_bytes(shards[0])  # a few bytes in the middle of the shard

    config = tiny_tokenizer_config(num_steps=4, **{"model.image_size": 32})
    train_source = source("chaos_photos", "train", str(data_dir))
    result = tokenizer.train(config, str(tmp_path / "run"), train_source=train_source,
                             eval_source=SyntheticSource(16, size=32))  # fmt: skip
    assert result["steps"] == 4
    skipped = result["corrupt_records_skipped"]
    assert skipped >= 1
    err = capfd.readouterr().err
    assert "warning: skipping corrupt record" in err
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["corrupt_records_skipped"] for r in records if "corrupt_records_skipped" in r] == [
        skipped
    ]
