"""FID parity against the reference network run in torch (StyleGAN3's TorchScript).

Needs torch (==2.13.0 CPU for CI) and the cached weights (`omni-img eval fetch-weights`);
skipped with a message otherwise. About a minute on 2 CPU cores.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from omni_img.evals.metrics import fid, inception, torch_zip, weights

pytestmark = [pytest.mark.torch, pytest.mark.slow]

N_IMAGES = 64
SIZES = [(64, 64), (32, 32), (128, 96), (299, 299), (256, 256), (80, 120)]


def varied_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` uint8 RGB images: noise, gradients, shapes, stripes, text, photos-ish blur."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h, w = SIZES[i % len(SIZES)]
        kind = (i // len(SIZES)) % 5
        if kind == 0:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            y, x = np.mgrid[0:h, 0:w] / max(h, w)
            phase = rng.uniform(0, 6, 3)
            image = 127.5 + 127.5 * np.sin(phase + 7 * x[..., None] + 3 * y[..., None] * phase)
        elif kind == 2:
            canvas = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(canvas)
            for _ in range(6):
                box = sorted(rng.integers(0, w, 2)), sorted(rng.integers(0, h, 2))
                xy = [box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1]
                fill = tuple(int(c) for c in rng.integers(0, 256, 3))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(xy, fill=fill)
            image = np.asarray(canvas)
        elif kind == 3:
            period = int(rng.integers(2, 9))
            stripes = (np.arange(w) // period % 2)[None, :, None] * np.ones((h, 1, 3))
            image = stripes * rng.integers(0, 256, 3) + (1 - stripes) * rng.integers(0, 256, 3)
        else:
            canvas = Image.new("RGB", (w, h), "white")
            ImageDraw.Draw(canvas).text((2, h // 3), "omni 42!", fill=(200, 10, 30))
            noise = np.cumsum(rng.normal(0, 6, (h, w, 3)), axis=0)
            image = np.asarray(canvas) * 0.7 + np.clip(noise, -60, 60)
        images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    return images


def _group_by_size(images):
    groups = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    return groups


@pytest.fixture(scope="module")
def torch_ref():
    torch = pytest.importorskip("torch", reason="torch not installed: FID parity skipped")
    path = weights.find(weights.FID_TORCHSCRIPT)
    if path is None:
        pytest.skip("FID weights not cached: run `omni-img eval fetch-weights`")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch, torch.jit.load(path, map_location="cpu").eval(), path


def _tf_resize_torch(torch, x, size=299):
    """StyleGAN3's emulation of TF's resize_bilinear: affine grid + grid_sample (border)."""
    F = torch.nn.functional
    b, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.unsqueeze(0).repeat([b, 1, 1])
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _torch_features(torch, net, images, preprocessing):
    """Reference features: per-size batches through the TorchScript network."""
    out = np.zeros((len(images), 2048), np.float32)
    for idx in _group_by_size(images).values():
        x = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            if preprocessing == "stylegan3":
                x = (_tf_resize_torch(torch, x) - 128) / 128
            else:  # pytorch_fid: ToTensor, bilinear align_corners=False, then 2x - 1
                x = torch.nn.functional.interpolate(
                    x / 255, size=(299, 299), mode="bilinear", align_corners=False
                )
                x = 2 * x - 1
            out[idx] = net(x).numpy()
    return out


def _our_features(extractor, images):
    out = np.zeros((len(images), 2048), np.float32)
    for idx in _group_by_size(images).values():
        out[idx] = extractor(np.stack([images[i] for i in idx]))
    return out


def test_features_match_torchscript_reference(torch_ref):
    torch, net, path = torch_ref
    images = varied_images(N_IMAGES)
    params = weights.load_fid_params(path)
    ours = _our_features(fid.FeatureExtractor(params, "stylegan3", batch_size=16), images)
    ref = _torch_features(torch, net, images, "stylegan3")
    max_diff = float(np.abs(ours - ref).max())
    fid_value = fid.fid_of_features(ours, ref)
    print(
        f"stylegan3 preprocessing, {N_IMAGES} images: max abs feature diff {max_diff:.2e}, "
        f"FID(ours, reference) {fid_value:.2e}, feature max {np.abs(ref).max():.2f}"
    )
    assert max_diff <= 1e-3
    assert abs(fid_value) <= 1e-3


def test_pytorch_fid_preprocessing_matches(torch_ref):
    torch, net, path = torch_ref
    images = varied_images(12, seed=1)
    params = weights.load_fid_params(path)
    ours = _our_features(fid.FeatureExtractor(params, "pytorch_fid", batch_size=8), images)
    ref = _torch_features(torch, net, images, "pytorch_fid")
    max_diff = float(np.abs(ours - ref).max())
    print(f"pytorch_fid preprocessing: max abs feature diff {max_diff:.2e}")
    assert max_diff <= 1e-3


def test_resize_matrices_match_torch(torch_ref):
    torch = torch_ref[0]
    rng = np.random.default_rng(0)
    for h, w in [(64, 64), (37, 300), (512, 128)]:
        image = rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32)
        x = torch.from_numpy(image)
        for method, ref in [
            ("tf_bilinear", _tf_resize_torch(torch, x)),
            (
                "bilinear_half_pixel",
                torch.nn.functional.interpolate(
                    x, size=(299, 299), mode="bilinear", align_corners=False
                ),
            ),
        ]:
            r_h, r_w = fid.resize_matrix(h, 299, method), fid.resize_matrix(w, 299, method)
            ours = r_h @ image.astype(np.float64) @ r_w.T
            # torch computes the sampling coordinates in float32: at 300 px that moves
            # them by ~4e-5 px, i.e. up to ~0.01 grey levels across a sharp edge.
            assert np.abs(ours - ref.numpy()).max() < 0.02, (method, h, w)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pytorch_fid_layout_loads_to_the_same_features(torch_ref, tmp_path, zip_format):
    """pytorch-fid's own file cannot be downloaded here: write its key layout (with the
    TorchScript's tensors, plus an `fc` head the loader must ignore) and compare."""
    torch, _, path = torch_ref
    state = inception.torchscript_to_pytorch_fid(torch_zip.load_state_dict(path))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    tensors["fc.weight"] = torch.zeros(1008, 2048)
    tensors["fc.bias"] = torch.zeros(1008)
    tensors["Mixed_5b.branch1x1.bn.num_batches_tracked"] = torch.tensor(0)
    file = tmp_path / "pt_inception-2015-12-05-fake.pth"
    torch.save(tensors, file, _use_new_zipfile_serialization=zip_format)

    from_ts = weights.load_fid_params(path)
    from_pth = weights.load_fid_params(str(file))
    for a, b in zip(*(jax_leaves(p) for p in (from_ts, from_pth)), strict=True):
        np.testing.assert_array_equal(a, b)
    images = np.stack(varied_images(4, seed=2)[:1] * 4)
    a = fid.FeatureExtractor(from_ts, batch_size=8)(images)
    b = fid.FeatureExtractor(from_pth, batch_size=8)(images)
    print(
        f"pytorch-fid layout ({'zip' if zip_format else 'legacy'}): max diff {np.abs(a - b).max()}"
    )
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_torch_save_roundtrip_dtypes_and_views(tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tree = {
        "f32": base,
        "view": base[1:, ::2],  # shares storage, offset and strides
        "t": base.t(),
        "f16": torch.randn(3, 5).half(),
        "bf16": torch.randn(7).bfloat16(),
        "i64": torch.arange(5),
        "bool": torch.tensor([True, False]),
        "nested": [torch.ones(2), {"x": torch.zeros(1, 2)}],
    }
    for zip_format in (True, False):
        file = tmp_path / f"t{zip_format}.pt"
        torch.save(tree, file, _use_new_zipfile_serialization=zip_format)
        flat = torch_zip.load_state_dict(file)
        assert set(flat) == {
            "f32",
            "view",
            "t",
            "f16",
            "bf16",
            "i64",
            "bool",
            "nested.0",
            "nested.1.x",
        }
        for key in ("f32", "view", "t", "f16", "i64", "bool"):
            np.testing.assert_array_equal(flat[key], tree[key].numpy())
        np.testing.assert_array_equal(flat["bf16"].astype(np.float32), tree["bf16"].float().numpy())
