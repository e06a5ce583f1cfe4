"""Bundles: round trip in a fresh process, corruption checks, StableHLO parity, atomic writes."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from omni_img.errors import UserError
from omni_img.export import bundle as bundle_lib
from omni_img.export.bundle import load_bundle, resolve_run, write_bundle
from omni_img.sampling import ar
from omni_img.sampling import rolling as rolling_sampling
from omni_img.sampling.pipeline import split_seed
from omni_img.sampling.session import edit_conditioning
from tests.support.bundles import PROMPT


def test_layout_manifest_and_no_pickle(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    from omni_img import __version__

    assert manifest["omni_img_version"] == __version__
    assert manifest["bundle_id"] == bundle_lib.bundle_id(manifest)
    listed = set(manifest["files"])
    on_disk = {str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    assert listed == on_disk
    assert set(bundle_lib.REQUIRED) <= listed
    assert {f"stablehlo/{name}.bin" for name in bundle_lib.EXPORTED} <= listed
    assert all("cpu" in e["platforms"] for e in manifest["exported"].values())
    for rel, entry in manifest["files"].items():
        assert (bundle_dir / rel).stat().st_size == entry["bytes"]
        assert not (bundle_dir / rel).read_bytes().startswith(b"\x80")  # pickle protocol 2+
    # EMA params only: no optimizer state, and the arrays load without pickle.
    with np.load(bundle_dir / "params/generator.npz", allow_pickle=False) as npz:
        assert npz.files and not any("opt" in name or "mu" in name.split("/") for name in npz.files)
        assert all(npz[name].dtype != object for name in npz.files)


def test_round_trip_in_a_fresh_process_without_the_workdirs(trained_run, bundle_dir, tmp_path):
    """(a) export -> fresh process, workdirs gone -> same image as from training state."""
    reference = bundle_lib.pipeline_from_workdirs(*resolve_run(trained_run))
    expected = reference.generate(PROMPT, seed=7, decoder="rolling")
    hidden = trained_run.with_name(trained_run.name + "_hidden")
    trained_run.rename(hidden)  # the bundle must not need anything in it
    try:
        out = tmp_path / "fresh.png"
        cmd = [
            sys.executable,
            "-m",
            "omni_img.cli",
            "generate",
            "--bundle",
            str(bundle_dir),
            "--prompt",
            PROMPT,
            "--seed",
            "7",
            "--out",
            str(out),
        ]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        hidden.rename(trained_run)
    with Image.open(out) as png:
        got = np.asarray(png.convert("RGB"))
        assert png.text["seed"] == "7"
    np.testing.assert_array_equal(got, expected)


def _copy(bundle_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle_dir, target)
    return target


@pytest.mark.parametrize("rel", ["params/generator.npz", "stablehlo/ar_sample_b1.bin"])
def test_flipped_byte_is_refused_naming_the_file(bundle_dir, tmp_path, rel):
    """(b) one flipped byte anywhere in a listed file."""
    target = _copy(bundle_dir, tmp_path)
    data = bytearray((target / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (target / rel).write_bytes(bytes(data))
    with pytest.raises(UserError, match=rel.replace(".", r"\.")):
        load_bundle(target)


@pytest.mark.parametrize("rel", ["params/rolling.npz", "text_tokenizer.json", "manifest.json"])
def test_missing_file_is_refused_naming_the_file(bundle_dir, tmp_path, rel):
    """(b) a file gone (the manifest itself included)."""
    target = _copy(bundle_dir, tmp_path)
    (target / rel).unlink()
    with pytest.raises(UserError, match=rel.replace(".", r"\.")):
        load_bundle(target)


def test_edited_manifest_is_refused(bundle_dir, tmp_path):
    target = _copy(bundle_dir, tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    # Dropping a required file from the manifest (and fixing the id) is still caught.
    del manifest["files"]["params/tokenizer.npz"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="manifest.json"):
        load_bundle(target)
    manifest["bundle_id"] = bundle_lib.bundle_id(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="params/tokenizer.npz"):
        load_bundle(target)


def test_stablehlo_sampler_matches_python(bundle):
    """(c) the deserialised AR sampler and decoders give what the Python functions give."""
    pipe = bundle.pipeline
    cond = edit_conditioning(pipe.text_tokenizer, PROMPT, pipe.generator.cfg)
    ar_key, decoder_key = split_seed(11)
    exported = bundle.exported("ar_sample_b1")
    assert isinstance(exported, jax.export.Exported)
    tokens = np.asarray(exported.call(pipe.generator_params, cond, ar_key))
    expected = np.asarray(ar.sample(pipe.generator, pipe.generator_params, cond, ar_key))
    np.testing.assert_array_equal(tokens, expected)

    e, mask = bundle.exported("text_embed_b1").call(pipe.generator_params, cond)
    image = bundle.exported("rolling_decode_b1").call(
        pipe.rolling_params, tokens, e, mask, decoder_key
    )
    python_e, python_mask = pipe.text_embeddings(cond)
    python_image, _ = rolling_sampling.sample(
        pipe.rolling_params, pipe.rolling_cfg, tokens, python_e, python_mask, decoder_key
    )
    np.testing.assert_allclose(np.asarray(image), np.asarray(python_image), atol=1e-5)


def test_export_command_bfloat16_bundle_is_smaller_and_close(trained_run, bundle, tmp_path, capsys):
    from omni_img import cli

    out = tmp_path / "bf16"
    argv = ["export", "--workdir", str(trained_run), "--out", str(out), "--dtype", "bfloat16"]
    assert cli.main(argv) == 0
    assert "exported" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "bfloat16"
    f32 = bundle.manifest["files"]["params/generator.npz"]["bytes"]
    assert manifest["files"]["params/generator.npz"]["bytes"] < 0.6 * f32
    loaded = load_bundle(out).pipeline
    for a, b in zip(
        jax.tree.leaves(loaded.generator_params), jax.tree.leaves(bundle.pipeline.generator_params)
    ):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=1e-6)
    # A second export into the same place needs --force; the refusal comes before any work.
    assert cli.main(argv) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli.main(["export", "--workdir", str(trained_run), "--out", str(out), "--dtype",
                     "float16"]) == 2  # fmt: skip
    assert "unknown dtype" in capsys.readouterr().err


def test_out_dir_is_written_atomically_and_never_overwritten_by_default(tmp_path):
    out = tmp_path / "bundle"
    sampling = ar.DEFAULT_SAMPLING
    files = {"model.json": b"{}", "params/a.npz": b"x"}
    manifest = bundle_lib.make_manifest(files, "float32", sampling)
    write_bundle(files, manifest, out)
    assert (out / "manifest.json").is_file()
    with pytest.raises(UserError, match="not empty"):
        write_bundle(files, manifest, out)
    # An export that dies half way leaves neither a bundle nor a temporary directory.
    broken = {"model.json": b"{}", "params/a.npz": None}
    with pytest.raises(TypeError):
        write_bundle(broken, manifest, tmp_path / "half")
    assert sorted(os.listdir(tmp_path)) == ["bundle"]
    write_bundle({"model.json": b"[]"}, manifest, out, force=True)
    assert (out / "model.json").read_bytes() == b"[]" and not (out / "params").exists()
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_resolve_run_refuses_other_stages(trained_run, tmp_path):
    assert resolve_run(trained_run)[0] == str(trained_run / "rolling")
    assert resolve_run(trained_run / "rolling") == (str(trained_run / "rolling"), None, None)
    with pytest.raises(UserError, match="tokenizer workdir"):
        resolve_run(trained_run / "tokenizer")
    with pytest.raises(UserError, match="does not exist"):
        resolve_run(tmp_path / "nope")


# ----------------------------------------------------------------------------- manifest fields
# A bundle made here, of placeholder files: verification reads only the manifest and the
# files' bytes, so none of these tests needs a trained run.


def _placeholder_bundle():
    files = {rel: b"placeholder" for rel in bundle_lib.REQUIRED}
    files.update({f"stablehlo/{name}.bin": b"stablehlo" for name in bundle_lib.EXPORTED})
    return files, bundle_lib.make_manifest(files, "float32", ar.DEFAULT_SAMPLING)


def _write(tmp_path, files, manifest, refresh_id=True):
    if refresh_id:  # a consistent id: only the field itself is wrong
        manifest["bundle_id"] = bundle_lib.bundle_id(manifest)
    return write_bundle(files, manifest, tmp_path / "bundle")


def test_placeholder_bundle_verifies(tmp_path):
    files, manifest = _placeholder_bundle()
    assert bundle_lib.verify_bundle(_write(tmp_path, files, manifest)) == manifest


FIELDS = [
    ("format",), ("format_version",), ("omni_img_version",), ("jax_version",), ("dtype",),
    ("files",), ("exported",), ("sampling",), ("bundle_id",),
    ("files", "params/generator.npz", "sha256"), ("files", "model.json", "bytes"),
    ("exported", "ar_sample_b1", "file"), ("exported", "tokenize_b1", "platforms"),
    ("exported", "conv_decode_b1", "computes"),
]  # fmt: skip


def _field_name(path) -> str:
    """files['model.json'].bytes: an entry of files or exported in brackets."""
    entry = f"[{path[1]!r}]" if len(path) > 1 else ""
    return path[0] + entry + "".join(f".{part}" for part in path[2:])


def _expect_one_line(bundle, *parts):
    with pytest.raises(UserError) as info:
        bundle_lib.verify_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message and str(bundle) in message, message
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize("path", FIELDS, ids=_field_name)
def test_manifest_missing_a_field_is_one_line_naming_it(tmp_path, path):
    files, manifest = _placeholder_bundle()
    node = manifest
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    bundle = _write(tmp_path, files, manifest, refresh_id=path != ("bundle_id",))
    _expect_one_line(bundle, f"has no field {_field_name(path)}")


ILL_TYPED = [
    (("format_version",), "1", "an int"),
    (("dtype",), ["float32"], "a string"),
    (("dtype",), "float16", "one of float32, bfloat16"),
    (("files",), ["model.json"], "an object"),
    (("exported",), "ar_sample_b1", "an object"),
    (("sampling",), 1.0, "an object"),
    (("bundle_id",), 7, "a string"),
    (("files", "model.json"), "sha256", "an object"),
    (("files", "model.json", "bytes"), "11", "an int"),
    (("files", "model.json", "bytes"), True, "an int"),
    (("files", "params/rolling.npz", "sha256"), None, "a string"),
    (("exported", "ar_sample_b1"), [], "an object"),
    (("exported", "ar_sample_b1", "file"), 3, "a string"),
    (("exported", "ar_sample_b1", "platforms"), "cpu", "a list of strings"),
]  # fmt: skip


@pytest.mark.parametrize(
    "path, value, kind", ILL_TYPED, ids=[f"{_field_name(p)}={v!r}" for p, v, _ in ILL_TYPED]
)
def test_manifest_field_of_the_wrong_type_is_one_line_naming_it(tmp_path, path, value, kind):
    files, manifest = _placeholder_bundle()
    node = manifest
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    bundle = _write(tmp_path, files, manifest, refresh_id=path != ("bundle_id",))
    _expect_one_line(bundle, f"field {_field_name(path)} must be {kind}")


def test_manifest_that_is_not_an_object_is_refused(tmp_path):
    files, manifest = _placeholder_bundle()
    bundle = _write(tmp_path, files, manifest)
    (bundle / "manifest.json").write_text("[1, 2]")
    _expect_one_line(bundle, "not an omni_img bundle manifest")


def test_hash_mismatch_is_called_corruption(tmp_path):
    """sha256 and bundle_id detect corruption, not tampering: whoever edits a file can
    recompute them, so the messages say corrupt, not tampered or modified."""
    files, manifest = _placeholder_bundle()
    bundle = _write(tmp_path, files, manifest)
    (bundle / "model.json").write_bytes(b"placeholdex")
    _expect_one_line(bundle, "model.json", "corrupt")
    (bundle / "model.json").write_bytes(b"placeholder")
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.replace('"float32"', '"bfloat16"'))
    _expect_one_line(bundle, "manifest.json", "corrupt")


def test_model_json_missing_a_field_is_one_line(tmp_path):
    from omni_img.text.tokenizer import make_text_tokenizer

    files, _ = _placeholder_bundle()
    files["model.json"] = json.dumps({"param_storage_dtype": "float32"}).encode()
    files["text_tokenizer.json"] = json.dumps(make_text_tokenizer("bytes").to_json()).encode()
    manifest = bundle_lib.make_manifest(files, "float32", ar.DEFAULT_SAMPLING)
    bundle = write_bundle(files, manifest, tmp_path / "bundle")
    with pytest.raises(UserError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message and str(bundle) in message and "model.json" in message, message
    assert "has no field tokenizer" in message, message
