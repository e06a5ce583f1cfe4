"""FID sanity on the built-in dataset with the real weights: a set against itself is 0,
test vs validation is small, and noise pushes FID up monotonically.

Needs the cached FID weights (no torch). A few minutes on 2 CPU cores: marked slow.
"""

import numpy as np
import pytest

from omni_img.evals.metrics import fid, weights

pytestmark = pytest.mark.slow

N = 64
NOISE_STD = (4.0, 16.0, 48.0)  # grey levels


def _split(split, count):
    from omni_img.world import examples

    return np.stack([examples.example(0, split, i, 64)["image"] for i in range(count)])


def _noised(images, std, seed=0):
    noise = np.random.default_rng(seed).normal(0.0, std, images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def test_fid_sanity_on_omni_shapes():
    path = weights.find(weights.FID_TORCHSCRIPT)
    if path is None:
        pytest.skip("FID weights not cached: run `omni-img eval fetch-weights`")
    extractor = fid.FeatureExtractor(weights.load_fid_params(path), batch_size=48)
    test, validation = _split("test", N), _split("validation", N)
    stats = lambda images: fid.compute_stats(images, extractor)[:2]  # noqa: E731
    ref = stats(test)
    # 64 images give singular covariances: pytorch-fid's sqrtm is off by ~1e-4 there, the
    # eigen method is exact (both documented in fid.frechet_distance).
    self_fid = fid.frechet_distance(*ref, *ref, method="eigen")
    self_sqrtm = fid.frechet_distance(*ref, *ref)
    val_stats = stats(validation)
    val_fid = fid.frechet_distance(*ref, *val_stats)
    val_eigen = fid.frechet_distance(*ref, *val_stats, method="eigen")
    noised = [fid.frechet_distance(*ref, *stats(_noised(test, s))) for s in NOISE_STD]
    print(
        f"omni_shapes 64px, {N} images: FID test/test {self_fid:.2e} (eigen), "
        f"{self_sqrtm:.2e} (sqrtm); test/validation {val_fid:.3f} (sqrtm), {val_eigen:.3f} "
        f"(eigen); test/noised {dict(zip(NOISE_STD, np.round(noised, 3)))}"
    )
    assert abs(self_fid) < 1e-6 and abs(self_sqrtm) < 1e-3
    assert abs(val_fid - val_eigen) < 1e-2
    assert val_fid < noised[-1] and val_fid < noised[1]
    assert all(a < b for a, b in zip(noised, noised[1:]))
