"""C2PA manifests read back with c2pa-python's Reader: on a served PNG, on a `generate`
PNG, with the user's own chain; and a PNG with one pixel changed fails validation."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from omni_img import cli
from omni_img.errors import UserError
from omni_img.provenance.c2pa_png import GENERATION_LABEL, TRAINED_ALGORITHMIC_MEDIA, read_manifest
from omni_img.provenance.chain import load_credentials, make_test_chain
from tests.support.bundles import PROMPT
from tests.support.http import noise_png


def png_chunks(data: bytes):
    position = 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        yield data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        position += 12 + length


def with_one_pixel_changed(data: bytes) -> bytes:
    """The same PNG, every chunk kept (the manifest too), one pixel byte flipped."""
    chunks = list(png_chunks(data))
    raw = bytearray(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
    raw[1] ^= 0x01  # row 0's filter byte is raw[0]; raw[1] is the first pixel's red
    out, written = bytearray(data[:8]), False
    for kind, body in chunks:
        if kind == b"IDAT":
            if written:
                continue
            body, written = zlib.compress(bytes(raw)), True
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return bytes(out)


def check_generated_manifest(report, bundle, prompt=PROMPT):
    assert report is not None and report.intact, report
    actions = report.assertion("c2pa.actions")["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    generation = report.assertion(GENERATION_LABEL)
    assert generation["bundle_id"] == bundle.bundle_id and generation.get("prompt") == prompt
    assert report.manifest["claim_generator_info"][0]["name"] == "omni_img"
    return generation


def test_served_png_carries_a_valid_manifest_and_a_pixel_change_breaks_it(client, bundle, stamper):
    png = client.post("/v1/generate", json={"prompt": PROMPT, "seed": 4, "decoder": "conv"}).content
    report = read_manifest(png)
    check_generated_manifest(report, bundle)
    assert report.state == "Valid" and report.failures == ("signingCredential.untrusted",)
    trusted = read_manifest(png, trust_anchors_pem=stamper.credentials.ca_pem)
    assert trusted.state == "Trusted" and trusted.failures == ()
    tampered = read_manifest(with_one_pixel_changed(png))
    assert tampered.state == "Invalid" and "assertion.dataHash.mismatch" in tampered.failures
    # the tampered file still decodes: only the manifest notices
    with Image.open(io.BytesIO(with_one_pixel_changed(png))) as image:
        assert image.convert("RGB").size == (bundle.pipeline.image_size[1],) * 2


def test_an_edit_records_its_upload_as_an_ingredient(client, bundle):
    response = client.post(
        "/v1/generate",
        data={"prompt": "make it green", "seed": "1", "decoder": "conv"},
        files={"image": ("photo.png", noise_png(3), "image/png")},
    )
    report = read_manifest(response.content)
    check_generated_manifest(report, bundle, "make it green")
    (ingredient,) = report.manifest["ingredients"]
    assert ingredient["relationship"] == "inputTo" and ingredient["format"] == "image/png"


def test_generate_png_carries_a_manifest_signed_with_the_users_chain(
    bundle_dir, bundle, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OMNI_IMG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out.png"
    args = ["generate", "--bundle", str(bundle_dir), "--prompt", PROMPT, "--decoder", "conv"]
    assert cli.main([*args, "--out", str(out)]) == 0
    assert "local test chain" in capsys.readouterr().out
    check_generated_manifest(read_manifest(out.read_bytes()), bundle)
    assert (tmp_path / "cache" / "c2pa_test_chain" / "signer.key").stat().st_mode & 0o077 == 0

    ca_pem, chain_pem, key_pem = make_test_chain()
    (tmp_path / "chain.pem").write_bytes(chain_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    mine = ["--c2pa_cert", str(tmp_path / "chain.pem"), "--c2pa_key", str(tmp_path / "key.pem")]
    assert cli.main([*args, *mine, "--no_prompt_in_provenance", "--out", str(out)]) == 0
    assert "supplied certificate" in capsys.readouterr().out
    report = read_manifest(out.read_bytes(), trust_anchors_pem=ca_pem)
    assert report.state == "Trusted"
    assert "prompt" not in report.assertion(GENERATION_LABEL)
    with Image.open(out) as image:
        assert "prompt" not in image.text and image.text["ai_generated"] == "true"
        np.testing.assert_array_equal(
            np.asarray(image.convert("RGB")), bundle.pipeline.generate(PROMPT, decoder="conv")
        )


def test_credentials_that_do_not_match_are_one_line_errors(tmp_path, capsys):
    _, chain_pem, _ = make_test_chain()
    _, _, other_key = make_test_chain()
    (tmp_path / "chain.pem").write_bytes(chain_pem)
    (tmp_path / "key.pem").write_bytes(other_key)
    with pytest.raises(UserError, match="is not the key of the first certificate"):
        load_credentials(str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))
    (tmp_path / "junk.pem").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a PEM certificate chain"):
        load_credentials(str(tmp_path / "junk.pem"), str(tmp_path / "key.pem"))
    out = str(tmp_path / "o.png")
    only_cert = ["--c2pa_cert", str(tmp_path / "chain.pem")]
    args = ["generate", "--bundle", str(tmp_path), "--prompt", "x", "--out", out, *only_cert]
    code = cli.main(args)
    assert code == 2 and "give both --c2pa_cert and --c2pa_key" in capsys.readouterr().err
