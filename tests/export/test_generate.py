"""The pipeline and `omni-img generate`: streaming order, provenance, edits, sessions, and
one-line errors for bad input."""

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from omni_img import cli
from omni_img.errors import UserError
from omni_img.sampling import ar
from omni_img.sampling.session import Session
from tests.support.bundles import PROMPT

# ----------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("decoder", ["sequential", "rolling"])
def test_first_band_streams_before_the_last_token_row(bundle, monkeypatch, decoder):
    """(d) instrument the AR row stream and the band stream; assert their interleaving."""
    pipe = bundle.pipeline
    events = []
    real_stream_rows = ar.stream_rows

    def recorded_rows(*args, **kwargs):
        for row, tokens in real_stream_rows(*args, **kwargs):
            events.append(("row", row))
            yield row, tokens

    monkeypatch.setattr(ar, "stream_rows", recorded_rows)
    images = []
    for band, image in pipe.stream(PROMPT, seed=3, decoder=decoder):
        events.append(("band", band))
        images.append(image)
    last_row = pipe.grid[0] - 1
    assert events.index(("band", 0)) < events.index(("row", last_row)), events
    assert [e for e in events if e[0] == "band"] == [
        ("band", g) for g in range(pipe.rolling_cfg.num_bands)
    ]
    assert images[0].shape == (*pipe.image_size, 3) and images[0].dtype == np.uint8
    band_rows = pipe.rolling_cfg.band_height
    assert (images[0][band_rows:] == 128).all()  # bands below the first: still grey
    whole = pipe.generate(PROMPT, seed=3, decoder=decoder)
    assert np.abs(images[-1].astype(int) - whole).max() <= 1


def test_conv_stream_yields_once_and_session_records_turns(bundle):
    pipe = bundle.pipeline
    (only,) = list(pipe.stream(PROMPT, seed=1, decoder="conv"))
    assert only[0] == 0
    np.testing.assert_array_equal(only[1], pipe.generate(PROMPT, seed=1, decoder="conv"))
    source = np.random.default_rng(0).integers(0, 256, (20, 24, 4), np.uint8)  # RGBA, resized
    session = pipe.new_session(source)
    pipe.generate("make it green", seed=1, decoder="conv", session=session)
    list(pipe.stream("now add a square", seed=2, decoder="sequential", session=session))
    assert [t.instruction for t in session.turns] == ["make it green", "now add a square"]
    with pytest.raises(UserError, match="already has an image"):
        pipe.conditioning("again", source_image=source, session=session)
    with pytest.raises(UserError, match="unknown decoder"):
        pipe.generate(PROMPT, decoder="vae")
    with pytest.raises(UserError, match="uint8"):
        pipe.generate(PROMPT, source_image=np.zeros((16, 16, 3), np.float32))


# ----------------------------------------------------------------------------- command


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `omni-img generate ARGV` run in this process."""
    code = cli.main(["generate", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_writes_png_with_provenance(bundle_dir, bundle, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, stdout, _ = run_cli(
        capsys,
        "--bundle",
        bundle_dir,
        "--prompt",
        PROMPT,
        "--seed",
        5,
        "--decoder",
        "sequential",
        "--out",
        out,
    )
    assert code == 0 and "wrote" in stdout
    with Image.open(out) as png:
        text, pixels = dict(png.text), np.asarray(png.convert("RGB"))
    from omni_img import __version__

    assert text["prompt"] == PROMPT and text["seed"] == "5" and text["decoder"] == "sequential"
    assert text["bundle_id"] == bundle.bundle_id and text["omni_img_version"] == __version__
    assert text["ai_generated"] == "true" and "AI-generated" in text["Comment"]
    assert json.loads(text["sampling"])["temperature"] == 1.0
    expected = bundle.pipeline.generate(PROMPT, seed=5, decoder="sequential")
    np.testing.assert_array_equal(pixels, expected)

    # --stream: one line per band as it lands; the last write is the whole image.
    code, stdout, _ = run_cli(
        capsys,
        "--bundle",
        bundle_dir,
        "--prompt",
        PROMPT,
        "--seed",
        5,
        "--decoder",
        "sequential",
        "--stream",
        "--out",
        out,
    )
    lines = [line for line in stdout.splitlines() if line.startswith("band ")]
    assert code == 0 and len(lines) == bundle.pipeline.rolling_cfg.num_bands
    assert all(" ms " in line for line in lines)
    with Image.open(out) as png:
        assert "partial" not in png.text
        assert np.abs(np.asarray(png.convert("RGB")).astype(int) - expected).max() <= 1


def test_generate_edits_and_continues_a_session(bundle_dir, tmp_path, capsys):
    source = tmp_path / "source.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 20), np.uint8)).save(source)
    session = tmp_path / "chat.json"
    common = ["--bundle", bundle_dir, "--decoder", "conv", "--session", session]
    code, _, err = run_cli(
        capsys, *common, "--prompt", "make it green", "--image", source, "--out", tmp_path / "1.png"
    )
    assert code == 0, err
    code, _, err = run_cli(
        capsys, *common, "--prompt", "now add a square", "--out", tmp_path / "2.png"
    )
    assert code == 0, err
    turns = Session.load(tmp_path / "chat").turns
    assert [t.instruction for t in turns] == ["make it green", "now add a square"]
    with Image.open(tmp_path / "2.png") as png:
        assert png.text["session_turn"] == "2"
    code, _, err = run_cli(
        capsys, *common, "--prompt", "x", "--image", source, "--out", tmp_path / "3.png"
    )
    assert code == 2 and "already has an image" in err


def _png_with_header_size(path, width, height):
    """A 1x1 PNG whose header claims width x height (a decompression bomb's shape)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _bad_images(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (32, 32, 3), np.uint8)
    valid = io.BytesIO()
    Image.fromarray(noise).save(valid, "PNG")
    paths = {
        "corrupt": tmp_path / "corrupt.png",
        "truncated": tmp_path / "truncated.png",
        "cmyk": tmp_path / "cmyk.jpg",
        "tiny": tmp_path / "tiny.png",
        "bomb": _png_with_header_size(tmp_path / "bomb.png", 20000, 20000),
        "large": _png_with_header_size(tmp_path / "large.png", 9000, 9000),
    }
    paths["corrupt"].write_bytes(os.urandom(256))
    paths["truncated"].write_bytes(valid.getvalue()[: len(valid.getvalue()) // 2])
    Image.new("CMYK", (16, 16)).save(paths["cmyk"], "JPEG")
    Image.new("RGB", (1, 1)).save(paths["tiny"])
    return paths


BAD_INPUT = {
    "missing bundle": (["--bundle", "{tmp}/nope"], "does not exist"),
    "corrupt bundle": (["--bundle", "{corrupt_bundle}"], "params/rolling.npz"),
    "empty prompt": (["--prompt", "  "], "prompt is empty"),
    "unknown decoder": (["--decoder", "vae"], "unknown decoder 'vae'"),
    "corrupt image": (["--image", "{corrupt}"], "not an image file"),
    "truncated image": (["--image", "{truncated}"], "corrupt or truncated"),
    "cmyk image": (["--image", "{cmyk}"], "CMYK"),
    "1x1 image": (["--image", "{tiny}"], "1x1, too small"),
    "20000x20000 header": (["--image", "{bomb}"], "too large"),
    "9000x9000 header": (["--image", "{large}"], "9000x9000, too large"),
    "missing image": (["--image", "{tmp}/none.png"], "no such file"),
    "out in missing dir": (["--out", "{tmp}/no/such/dir/out.png"], "does not exist"),
    "out is a dir": (["--out", "{tmp}"], "is a directory"),
    "bad top_p": (["--top_p", "0"], "--top_p"),
    "negative seed": (["--seed", "-1"], "--seed"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(case, bundle_dir, tmp_path, capsys):
    """(e) every bad input: exit code 2, one line on stderr naming the problem."""
    import shutil

    names = {k: str(v) for k, v in _bad_images(tmp_path).items()}
    names["tmp"] = str(tmp_path)
    names["corrupt_bundle"] = str(tmp_path / "corrupt_bundle")
    shutil.copytree(bundle_dir, names["corrupt_bundle"])
    (tmp_path / "corrupt_bundle/params/rolling.npz").write_bytes(b"not the params")
    flags, expected = BAD_INPUT[case]
    argv = {"--bundle": str(bundle_dir), "--prompt": PROMPT, "--out": str(tmp_path / "o.png")}
    argv.update(dict(zip(flags[::2], [f.format(**names) for f in flags[1::2]])))
    code, _, err = run_cli(capsys, *[x for pair in argv.items() for x in pair])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("omni-img generate: error:"), err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "o.png").exists()


def test_bad_input_in_a_fresh_process_has_no_traceback(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "omni_img.cli",
        "generate",
        "--bundle",
        str(tmp_path / "nope"),
        "--prompt",
        PROMPT,
        "--out",
        str(tmp_path / "o.png"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_second_process_reuses_compiled_code_and_verbose_splits_time(bundle_dir, tmp_path):
    """The persistent compilation cache: a second `generate` process compiles nothing."""
    env = {**os.environ, "OMNI_IMG_COMPILATION_CACHE": str(tmp_path / "jax_cache")}

    def generate(out: str) -> str:
        cmd = [sys.executable, "-m", "omni_img.cli", "generate", "--bundle", str(bundle_dir)]
        cmd += ["--prompt", PROMPT, "--out", str(tmp_path / out), "--verbose"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def counts(stdout: str, layer: str) -> tuple[int, int]:
        found = re.search(layer + r": (\d+) hits, (\d+) misses", stdout)
        assert found, stdout
        return int(found[1]), int(found[2])

    first, second = generate("a.png"), generate("b.png")
    for stdout in (first, second):
        assert re.search(r"load \d+ ms, tokens \d+ ms, decode \d+ ms", stdout), stdout
    stored_hits, stored_misses = counts(first, "stored executables")
    assert stored_hits == 0 and stored_misses >= 3  # AR sampling, text embedding, decoder
    assert counts(first, "persistent cache")[0] == 0
    # The second process runs the stored executables and compiles nothing anew.
    assert counts(second, "stored executables") == (stored_misses, 0), second
    assert counts(second, "persistent cache")[1] == 0, second
    first_image = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(first_image, np.asarray(Image.open(tmp_path / "b.png")))
