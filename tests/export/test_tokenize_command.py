"""`omni-img tokenize --dataset`: another build than the tokenizer's own, checked first."""

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
