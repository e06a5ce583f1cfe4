"""FID pieces that need neither torch nor real weights (real-weight checks at the end)."""

import jax
import numpy as np
import pytest

from omni_img.errors import UserError
from omni_img.evals.metrics import fid, inception, weights


def test_resize_matrices():
    for method in ("tf_bilinear", "bilinear_half_pixel"):
        np.testing.assert_allclose(fid.resize_matrix(299, 299, method), np.eye(299))
        matrix = fid.resize_matrix(64, 299, method)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
        assert (matrix >= 0).all()
    # TF style: no half-pixel offset, output 1 samples input 64/299 (not 0.5*64/299-0.5).
    tf = fid.resize_matrix(64, 299, "tf_bilinear")
    assert tf[0, 0] == 1.0 and tf[1, 0] == pytest.approx(1 - 64 / 299)
    assert tf[-1, -1] == 1.0  # clamped at the edge
    half = fid.resize_matrix(64, 299, "bilinear_half_pixel")
    assert half[1, 0] == 1.0  # (1.5 * 64/299 - 0.5) < 0 is clamped to pixel 0


def test_named_preprocessing_and_default():
    assert fid.DEFAULT_PREPROCESSING == "stylegan3"
    assert set(fid.PREPROCESSING) == {"stylegan3", "pytorch_fid", "clean_fid"}
    with pytest.raises(UserError, match="unknown FID preprocessing"):
        fid.get_preprocessing("tensorflow")


def test_stats_accumulator_matches_np_cov():
    rng = np.random.default_rng(0)
    feats = 1000.0 + rng.normal(size=(300, 16)) * rng.uniform(0.01, 2, 16)
    acc = fid.StatsAccumulator(16)
    for chunk in np.array_split(feats, 7):
        acc.update(chunk.astype(np.float32))
    mu, sigma = acc.mu_sigma()
    f32 = feats.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f32, rowvar=False), atol=1e-9)
    np.testing.assert_allclose(
        acc.mu_sigma(ddof=0)[1], np.cov(f32, rowvar=False, ddof=0), atol=1e-9
    )


def test_frechet_distance_closed_form_and_singular():
    rng = np.random.default_rng(1)
    d1, d2 = rng.uniform(0.1, 2, 8), rng.uniform(0.1, 2, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    got = fid.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2))
    assert got == pytest.approx(expected, rel=1e-10)
    # Rank-deficient covariances (fewer samples than dimensions), as with 64 images.
    feats = rng.normal(size=(10, 32))
    mu, sigma = fid.StatsAccumulator(32), None
    mu.update(feats)
    mu, sigma = mu.mu_sigma()
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma, method="eigen")) < 1e-9
    other = fid.StatsAccumulator(32)
    other.update(rng.normal(size=(12, 32)) + 0.3)
    args = (mu, sigma, *other.mu_sigma())
    assert fid.frechet_distance(*args, method="eigen") == pytest.approx(
        fid.frechet_distance(*args), rel=1e-6
    )
    assert fid.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2), method="eigen") == (
        pytest.approx(expected, rel=1e-10)
    )


def test_stats_file_roundtrip_and_errors(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    fid.save_stats(tmp_path / "ref", mu, sigma, count=5)  # no .npz suffix: kept as given
    got_mu, got_sigma = fid.load_stats(tmp_path / "ref")
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(UserError, match="need 'mu' and 'sigma'"):
        fid.load_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", mu=np.array([{"x": 1}], dtype=object), sigma=sigma)
    with pytest.raises(UserError):
        fid.load_stats(tmp_path / "obj.npz")
    with pytest.raises(UserError, match="not found"):
        fid.load_stats(tmp_path / "missing.npz")


@pytest.fixture(scope="module")
def random_params():
    return inception.random_params(0)


def test_sharded_extractor_equals_single_device(random_params):
    assert len(jax.devices()) == 8
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 48, 40, 3), dtype=np.uint8)  # 11: padded batches
    sharded = fid.FeatureExtractor(random_params, batch_size=8)(images)
    single = fid.FeatureExtractor(random_params, batch_size=4, devices=jax.devices()[:1])(images)
    assert sharded.shape == (11, 2048)
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)
    # The same image alone gives the same row: padding never leaks into results.
    alone = fid.FeatureExtractor(random_params, batch_size=8)(images[3:4])
    np.testing.assert_allclose(alone[0], sharded[3], rtol=1e-5, atol=1e-5)


def test_compute_stats_streams_mixed_sizes(random_params):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (32, 32, 40, 32)]
    extractor = fid.FeatureExtractor(random_params, batch_size=8)
    mu, sigma, n = fid.compute_stats(iter(images), extractor)
    rows = np.concatenate([extractor(im[None]) for im in images])
    assert n == 4
    np.testing.assert_allclose(mu, rows.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    assert sigma.shape == (2048, 2048)


def test_clean_fid_resize_is_pil_bicubic_clipped():
    image = np.zeros((1, 20, 20, 3), np.uint8)
    image[:, 5:15, 5:15] = 255
    out = fid.pil_bicubic_resize(image)
    assert out.shape == (1, 299, 299, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255  # bicubic overshoot is clipped


def test_param_converters_reject_bad_state():
    with pytest.raises(ValueError, match="not an FID Inception state dict"):
        inception.params_from_pytorch_fid({"fc.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="not the FID Inception TorchScript"):
        inception.params_from_torchscript({"net.layers.conv.weight": np.zeros((32, 3, 3, 3))})


def test_real_weights_load_without_torch():
    path = weights.find(weights.FID_TORCHSCRIPT)
    if path is None:
        pytest.skip("FID weights not cached: run `omni-img eval fetch-weights`")
    params = weights.load_fid_params(path)
    n_convs = len(jax.tree_util.tree_leaves(params)) // 5
    assert n_convs == 94
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    feats = fid.FeatureExtractor(params, batch_size=8)(images)
    assert feats.shape == (8, 2048) and np.isfinite(feats).all() and (feats >= 0).all()
