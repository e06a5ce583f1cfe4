"""The FID InceptionV3 in Flax: TensorFlow's `inception-2015-12-05` graph, pool_3 output.

This is the network behind the standard FID, not torchvision's InceptionV3: batch norm
without a learned scale (eps 1e-3), average pools that exclude the padding from their
count, a max pool in the last block's pool branch, and the 2048-d `pool_3` features as
output (no classifier). Parameter names follow pytorch-fid / torchvision
(`Mixed_6b/branch7x7_2/...`) because that is the layout most readers know; converters from
pytorch-fid's state dict and from StyleGAN3's TorchScript archive are at the bottom.

Layout: NHWC. Letters in names: B batch, H/W height/width, C channels, F features (2048).
Input: float, 299x299, already scaled to [-1, 1) (see `omni_img.evals.metrics.fid` for the
resizing and scaling each reference uses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN_EPS = 1e-3
INPUT_SIZE = 299
FEATURE_DIM = 2048

Padding = tuple[tuple[int, int], tuple[int, int]]


def _pad(ph: int, pw: int) -> Padding:
    return ((ph, ph), (pw, pw))


class ConvBN(nn.Module):
    """Conv (no bias) -> batch norm with frozen statistics -> ReLU.

    Params: kernel (kh, kw, Cin, Cout); gamma, beta, mean, var (Cout,). TF's graph has no
    BN scale, so `gamma` stays 1 for its weights; pytorch-fid's file stores it as ones.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: Padding = ((0, 0), (0, 0))
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    # Full fp32 on accelerators too (default GPU/TPU matmuls may drop to tf32/bf16):
    # FID parity is the point of this module.
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        cin = x_BxHxWxC.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (kh, kw, cin, self.features), self.param_dtype
        )
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        gamma = self.param("gamma", ones, (self.features,), self.param_dtype)
        beta = self.param("beta", zeros, (self.features,), self.param_dtype)
        mean = self.param("mean", zeros, (self.features,), self.param_dtype)
        var = self.param("var", ones, (self.features,), self.param_dtype)
        y = jax.lax.conv_general_dilated(
            x_BxHxWxC.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(self.strides, self.strides),
            padding=self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        scale = gamma * jax.lax.rsqrt(var + BN_EPS)
        shift = beta - mean * scale
        return nn.relu(y * scale.astype(self.dtype) + shift.astype(self.dtype))


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # TF's SAME average pool divides by the number of real (unpadded) pixels.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nn.Module):
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def conv(self, name: str, features: int, kernel: tuple[int, int], **kw) -> ConvBN:
        return ConvBN(
            features, kernel, name=name, dtype=self.dtype, param_dtype=self.param_dtype, **kw
        )


class InceptionA(_Block):
    """Mixed_5b/5c/5d: 35x35 grid, 1x1 | 5x5 | double 3x3 | avg pool + 1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 64, (1, 1))(x)
        b5 = self.conv("branch5x5_1", 48, (1, 1))(x)
        b5 = self.conv("branch5x5_2", 64, (5, 5), padding=_pad(2, 2))(b5)
        b3 = self.conv("branch3x3dbl_1", 64, (1, 1))(x)
        b3 = self.conv("branch3x3dbl_2", 96, (3, 3), padding=_pad(1, 1))(b3)
        b3 = self.conv("branch3x3dbl_3", 96, (3, 3), padding=_pad(1, 1))(b3)
        bp = self.conv("branch_pool", self.pool_features, (1, 1))(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Mixed_6a: 35x35 -> 17x17 reduction."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3", 384, (3, 3), strides=2)(x)
        bd = self.conv("branch3x3dbl_1", 64, (1, 1))(x)
        bd = self.conv("branch3x3dbl_2", 96, (3, 3), padding=_pad(1, 1))(bd)
        bd = self.conv("branch3x3dbl_3", 96, (3, 3), strides=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Block):
    """Mixed_6b..6e: 17x17 grid with factorised 7x7 convolutions."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192, (1, 1))(x)
        b7 = self.conv("branch7x7_1", c7, (1, 1))(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=_pad(0, 3))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=_pad(3, 0))(b7)
        bd = self.conv("branch7x7dbl_1", c7, (1, 1))(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=_pad(3, 0))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=_pad(0, 3))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=_pad(3, 0))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=_pad(0, 3))(bd)
        bp = self.conv("branch_pool", 192, (1, 1))(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Mixed_7a: 17x17 -> 8x8 reduction."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.conv("branch3x3_1", 192, (1, 1))(x)
        b3 = self.conv("branch3x3_2", 320, (3, 3), strides=2)(b3)
        b7 = self.conv("branch7x7x3_1", 192, (1, 1))(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=_pad(0, 3))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=_pad(3, 0))(b7)
        b7 = self.conv("branch7x7x3_4", 192, (3, 3), strides=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Block):
    """Mixed_7b/7c: 8x8 grid, expanded filter banks. `max_pool`: the pool branch of 7c."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = self.conv("branch1x1", 320, (1, 1))(x)
        b3 = self.conv("branch3x3_1", 384, (1, 1))(x)
        b3a = self.conv("branch3x3_2a", 384, (1, 3), padding=_pad(0, 1))(b3)
        b3b = self.conv("branch3x3_2b", 384, (3, 1), padding=_pad(1, 0))(b3)
        bd = self.conv("branch3x3dbl_1", 448, (1, 1))(x)
        bd = self.conv("branch3x3dbl_2", 384, (3, 3), padding=_pad(1, 1))(bd)
        bda = self.conv("branch3x3dbl_3a", 384, (1, 3), padding=_pad(0, 1))(bd)
        bdb = self.conv("branch3x3dbl_3b", 384, (3, 1), padding=_pad(1, 0))(bd)
        if self.max_pool:  # TF graph quirk kept by every FID port: mixed_10 max-pools.
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=_pad(1, 1))
        else:
            pooled = _avg_pool_3x3(x)
        bp = self.conv("branch_pool", 192, (1, 1))(pooled)
        return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """(B, 299, 299, 3) in [-1, 1) -> (B, 2048) pool_3 features."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWx3: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvBN(32, (3, 3), strides=2, name="Conv2d_1a_3x3", **kw)(x_BxHxWx3)
        x = ConvBN(32, (3, 3), name="Conv2d_2a_3x3", **kw)(x)
        x = ConvBN(64, (3, 3), padding=_pad(1, 1), name="Conv2d_2b_3x3", **kw)(x)
        x = _max_pool_3x3_s2(x)
        x = ConvBN(80, (1, 1), name="Conv2d_3b_1x1", **kw)(x)
        x = ConvBN(192, (3, 3), name="Conv2d_4a_3x3", **kw)(x)
        x = _max_pool_3x3_s2(x)
        x = InceptionA(pool_features=32, name="Mixed_5b", **kw)(x)
        x = InceptionA(pool_features=64, name="Mixed_5c", **kw)(x)
        x = InceptionA(pool_features=64, name="Mixed_5d", **kw)(x)
        x = InceptionB(name="Mixed_6a", **kw)(x)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = InceptionC(channels_7x7=c7, name=name, **kw)(x)
        x = InceptionD(name="Mixed_7a", **kw)(x)
        x = InceptionE(max_pool=False, name="Mixed_7b", **kw)(x)
        x = InceptionE(max_pool=True, name="Mixed_7c", **kw)(x)
        # pool_3: the 8x8 average pool over the whole remaining grid.
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


# ---------------------------------------------------------------------------------------
# Converters: torch state dicts (NumPy arrays, read by omni_img.evals.metrics.torch_zip) -> params.

# StyleGAN3 TorchScript module path -> pytorch-fid module path, per block type.
_TS_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_TS_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_TS_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_TS_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    **{f"tower_1.conv{'_' + str(i) if i else ''}": f"branch7x7dbl_{i + 1}" for i in range(5)},
    "tower_2.conv": "branch_pool",
}
_TS_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    **{f"tower_1.conv{'_' + str(i) if i else ''}": f"branch7x7x3_{i + 1}" for i in range(4)},
}
_TS_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_TS_MIXED = [
    ("mixed", "Mixed_5b", _TS_A),
    ("mixed_1", "Mixed_5c", _TS_A),
    ("mixed_2", "Mixed_5d", _TS_A),
    ("mixed_3", "Mixed_6a", _TS_B),
    ("mixed_4", "Mixed_6b", _TS_C),
    ("mixed_5", "Mixed_6c", _TS_C),
    ("mixed_6", "Mixed_6d", _TS_C),
    ("mixed_7", "Mixed_6e", _TS_C),
    ("mixed_8", "Mixed_7a", _TS_D),
    ("mixed_9", "Mixed_7b", _TS_E),
    ("mixed_10", "Mixed_7c", _TS_E),
]


def _conv_paths() -> dict[str, str]:
    """TorchScript conv path (under `net.layers.`) -> pytorch-fid conv path."""
    paths = dict(_TS_STEM)
    for ts_block, fid_block, table in _TS_MIXED:
        for ts, fid in table.items():
            paths[f"{ts_block}.{ts}"] = f"{fid_block}.{fid}"
    return paths


def torchscript_to_pytorch_fid(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename StyleGAN3's TorchScript tensors (`net.layers.mixed_4.tower.conv_1.weight`) to
    pytorch-fid's state-dict keys (`Mixed_6b.branch7x7_2.conv.weight`); BN gets gamma = 1."""
    out: dict[str, np.ndarray] = {}
    prefix = "net.layers." if any(k.startswith("net.layers.") for k in state) else ""
    for ts, fid in _conv_paths().items():
        try:
            weight = state[f"{prefix}{ts}.weight"]
            out[f"{fid}.conv.weight"] = weight
            out[f"{fid}.bn.weight"] = np.ones(weight.shape[0], weight.dtype)
            out[f"{fid}.bn.bias"] = state[f"{prefix}{ts}.beta"]
            out[f"{fid}.bn.running_mean"] = state[f"{prefix}{ts}.mean"]
            out[f"{fid}.bn.running_var"] = state[f"{prefix}{ts}.var"]
        except KeyError as missing:
            raise ValueError(f"not the FID Inception TorchScript: no tensor {missing}") from None
    return out


def params_from_pytorch_fid(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """pytorch-fid state dict (`Mixed_6b.branch7x7_2.conv.weight`, `.bn.*`) -> Flax params.

    Conv weights go OIHW -> HWIO. Keys the FID network does not use (`fc.*`,
    `num_batches_tracked`) are ignored; a missing key raises ValueError naming it.
    """
    params: dict[str, Any] = {}
    for fid in _conv_paths().values():
        try:
            leaf = {
                "kernel": np.transpose(state[f"{fid}.conv.weight"], (2, 3, 1, 0)),
                "gamma": state.get(f"{fid}.bn.weight"),
                "beta": state[f"{fid}.bn.bias"],
                "mean": state[f"{fid}.bn.running_mean"],
                "var": state[f"{fid}.bn.running_var"],
            }
        except KeyError as missing:
            raise ValueError(f"not an FID Inception state dict: no tensor {missing}") from None
        if leaf["gamma"] is None:
            leaf["gamma"] = np.ones_like(leaf["beta"])
        node = params
        for part in fid.split("."):
            node = node.setdefault(part, {})
        node.update({k: np.asarray(v, np.float32) for k, v in leaf.items()})
    check_params(params)
    return params


def params_from_torchscript(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """StyleGAN3 / fid-helper TorchScript tensors (`net.layers....`) -> Flax params."""
    return params_from_pytorch_fid(torchscript_to_pytorch_fid(state))


def check_params(params: dict[str, Any]) -> None:
    """Raise ValueError unless `params` has exactly the FID Inception's names and shapes."""
    expected = jax.eval_shape(
        lambda: FIDInceptionV3().init(jax.random.PRNGKey(0), jnp.zeros((1, 299, 299, 3)))
    )["params"]
    want = {jax.tree_util.keystr(p): a.shape for p, a in _leaves(expected)}
    got = {jax.tree_util.keystr(p): np.shape(a) for p, a in _leaves(params)}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise ValueError(
                f"FID Inception parameter {name}: expected shape {want.get(name)}, "
                f"got {got.get(name)}"
            )


def _leaves(tree: Any) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def random_params(seed: int = 0) -> dict[str, Any]:
    """Random weights with FID Inception shapes (He-scaled kernels, identity BN), built
    with NumPy from the shapes alone: `init` would run a full 299x299 forward pass."""
    shapes = jax.eval_shape(
        lambda: FIDInceptionV3().init(jax.random.PRNGKey(0), jnp.zeros((1, 299, 299, 3)))
    )["params"]
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(shape.shape[:3]))
            return (rng.standard_normal(shape.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return np.full(shape.shape, 1.0 if name in ("gamma", "var") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def apply_fn(dtype: Any = jnp.float32) -> Callable[[Any, jax.Array], jax.Array]:
    """`f(params, x_Bx299x299x3) -> features_BxF`, ready for `jax.jit`."""
    model = FIDInceptionV3(dtype=dtype)
    return lambda params, x: model.apply({"params": params}, x)
