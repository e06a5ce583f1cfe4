"""`omni-img tokenize --dataset`: another build than the tokenizer's own, checked first."""

import numpy as np

from omni_img.cli import main
from omni_img.data.reading import prepare


def test_a_dataset_of_another_resolution_is_refused_naming_both(trained_run, tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    prepare("omni_shapes/tiny", str(data_dir))  # 64 px; the fixture's tokenizer reads 16 px
    out = tmp_path / "tokens"
    code = main([
        "tokenize", "--tokenizer", str(trained_run / "tokenizer"), "--split", "validation",
        "--dataset", "omni_shapes/tiny", "--data_dir", str(data_dir), "--out", str(out),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "64 px images" in err and "encodes 16 px" in err, err
    assert not (out / "validation.array_record").exists()


class EditEveryThird:
    """A split of 16 px rows (the fixture tokenizer's size); every third is an edit."""

    def __len__(self):
        return 40

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        image, source = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
        row = {"image": image, "task": "edit" if index % 3 == 0 else "compose", "index": index}
        return {
            **row,
            "caption": f"caption {index}",
            **({"source_image": source} if index % 3 == 0 else {}),
        }


def test_tokens_are_the_tokenizers_own_encoding_edit_sources_only_for_edits(
    trained_run, tmp_path, monkeypatch
):
    """Batches split over the devices and edit sources gathered into batches of their own
    give each record exactly what the tokenizer encodes for its images, one by one."""
    import jax

    from omni_img.data.tokenized import TokenizedSource
    from omni_img.models import tokenizer as tokenizer_model
    from omni_img.stages.tokenizer import load_workdir
    from omni_img.trainers.tokenize import tokenize_split
    from omni_img.training import sources

    rows = EditEveryThird()
    monkeypatch.setattr(sources, "open_split", lambda data, split: rows)
    workdir = str(trained_run / "tokenizer")
    tokenize_split(workdir, "validation", str(tmp_path), batch_size=8)
    _, model, params = load_workdir(workdir)
    written = TokenizedSource(tmp_path, "validation")
    encode = jax.jit(lambda x: tokenizer_model.encode(model, params, x))
    assert len(written) == len(rows)
    for index in range(len(rows)):
        row, record = rows[index], written[index]
        assert record["caption"] == row["caption"] and record["index"] == index
        np.testing.assert_array_equal(record["target_tokens"], encode(row["image"][None])[0])
        if row["task"] == "edit":  # 14 of 40: one full batch of 8 sources and a padded one
            assert record["has_source"]
            source = encode(row["source_image"][None])[0]
            np.testing.assert_array_equal(record["source_tokens"], source)
        else:
            assert not record["has_source"] and not np.any(record["source_tokens"]), index
