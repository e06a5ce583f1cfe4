"""Building omni_shapes without TensorFlow, reading it back through grain, byte-identical builds."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from omni_img.world import examples

BUILD_WITHOUT_TF = r"""
import json, sys
try:
    import tensorflow  # noqa: F401
    print(json.dumps({"tensorflow_importable": True}))
    sys.exit(0)
except ImportError:
    pass
from omni_img.cli import main
code = main(["data", "build", "--config", "tiny", "--data_dir", sys.argv[1]])
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
print(json.dumps({"code": code, "tensorflow_modules": loaded}))
"""


def _build(data_dir):
    env = {**os.environ, "OMNI_IMG_BUILD_WORKERS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", BUILD_WITHOUT_TF, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    outcome = _build(data_dir)
    if outcome.get("tensorflow_importable"):
        pytest.skip("TensorFlow is installed here; this test needs an environment without it")
    assert outcome == {"code": 0, "tensorflow_modules": []}
    return data_dir


def test_build_reads_back_through_grain_exactly(tiny_dir):
    import grain

    from omni_img.data import source

    for split in ("train", "validation", "test"):
        src = source("omni_shapes/tiny", split, str(tiny_dir))
        dataset = grain.MapDataset.source(src)
        assert len(dataset) == {"train": 360, "validation": 72, "test": 72}[split]
        for index in (0, 1, 2, 3, 4, 5, len(dataset) - 1):
            record = dataset[index]
            expected = examples.example(0, split, index, 64)
            np.testing.assert_array_equal(record["image"], expected["image"])
            np.testing.assert_array_equal(record["source_image"], expected["source_image"])
            for key in ("caption", "history", "task", "spec", "source_spec", "edit_op"):
                assert record[key].decode() == expected[key], key
            assert int(record["index"]) == index


def test_grain_data_loader_batches(tiny_dir):
    import grain

    from omni_img.data import source

    src = source("tiny", "train", str(tiny_dir))
    loader = grain.DataLoader(
        data_source=src,
        sampler=grain.samplers.IndexSampler(len(src), num_epochs=1, shuffle=False, seed=0),
        operations=[grain.transforms.Batch(batch_size=8)],
        worker_count=0,
    )
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["image"][3], examples.example(0, "train", 3)["image"])


def _digest(root):
    digest = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if ".array_record" in name:
                with open(os.path.join(folder, name), "rb") as f:
                    digest[name] = hashlib.sha256(f.read()).hexdigest()
    return digest


def test_two_builds_are_byte_identical(tiny_dir, tmp_path):
    os.environ.pop("OMNI_IMG_BUILD_WORKERS", None)
    from omni_img.data.reading import prepare

    prepare("omni_shapes/tiny", str(tmp_path))  # a second build, in this process
    first, second = _digest(tiny_dir), _digest(tmp_path)
    assert len(first) == 3 and first == second


def test_reading_an_unbuilt_dataset_names_the_command(tmp_path):
    from omni_img.data import source
    from omni_img.errors import UserError

    with pytest.raises(UserError, match="omni-img data build"):
        source("omni_shapes/64px", "train", str(tmp_path))
    with pytest.raises(UserError, match="unknown omni_shapes config"):
        source("omni_shapes/huge", "train", str(tmp_path))


@pytest.mark.slow
def test_default_build_without_tensorflow(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", BUILD_WITHOUT_TF.replace('"--config", "tiny", ', ""),
         str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if outcome.get("tensorflow_importable"):
        pytest.skip("TensorFlow is installed here; this test needs an environment without it")
    assert outcome == {"code": 0, "tensorflow_modules": []}
    from omni_img.data import source

    sizes = {
        s: len(source("omni_shapes", s, str(tmp_path))) for s in ("train", "validation", "test")
    }
    assert sizes == {"train": 20_000, "validation": 2_000, "test": 3_000}
    test = source("omni_shapes", "test", str(tmp_path))
    for index in (0, 1, 2, 2999):
        np.testing.assert_array_equal(
            test[index]["image"], examples.example(0, "test", index)["image"]
        )
