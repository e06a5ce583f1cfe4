"""Inference bundles: export three trained stages to one verified directory, load it back.

Layout of a bundle (every file but the manifest is listed in it with its sha256 and size):

    manifest.json            format, omni_img and jax versions, dtype, files, exported
                             functions, bundle_id (sha256 of the rest of the manifest)
    model.json               what rebuilds the Flax modules: tokenizer spec, generator and
                             rolling-decoder configs, stored param dtype
    text_tokenizer.json      the text tokenizer's ``to_json()`` description
    configs/<stage>.json     the resolved training config of each stage (provenance)
    params/<stage>.npz       EMA params only, flattened "a/b/c" keys; bfloat16 bundles keep
                             the raw bits as uint16 (npz has no bfloat16), upcast on load
    stablehlo/<name>.bin     ``jax.export`` serialisations of the sampling functions at
                             batch 1 (params are arguments, not constants; see EXPORTED)

No pickle anywhere: JSON, ``np.savez`` read with ``allow_pickle=False``, and StableHLO.
``export_bundle`` writes into a temporary sibling directory and renames it into place, so
an interrupted export never leaves a directory that looks like a bundle. ``load_bundle``
checks the manifest before it reads a parameter (omni_img/export/manifest.py): every
field present and of its type, every listed file present with its size and sha256, every
required file listed, the bundle id consistent. The hashes detect corruption, not
tampering.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from omni_img.errors import UserError
from omni_img.export.manifest import (  # noqa: F401  (bundle_id, FORMAT: part of this API)
    DTYPES,
    EXPORTED,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    REQUIRED,
    STAGES,
    bundle_id,
    check_fields,
    make_manifest,
    verify_bundle,
)

# StableHLO is lowered for all of these when it can be (only CPU is tested here).
EXPORT_PLATFORMS = ("cpu", "cuda", "tpu")
# model.json's fields: what `build_modules` reads
MODEL_FIELDS = {"param_storage_dtype": DTYPES, "tokenizer": dict, "generator": dict,
                "rolling": dict}  # fmt: skip
TOKENIZER_FIELDS = {"spec": dict, "dtype": str}


# ----------------------------------------------------------------------------- params


def flatten_params(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested mapping of arrays -> {"a/b/c": host array}; boxed (Partitioned) leaves unboxed."""
    import flax.linen as nn

    tree = nn.unbox(tree)
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if "/" in str(key):
            raise ValueError(f"parameter name {key!r} contains '/'")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of ``flatten_params``: plain nested dicts."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _npz_bytes(flat: Mapping[str, np.ndarray], dtype: str) -> bytes:
    import ml_dtypes

    arrays = {}
    for name, value in flat.items():
        if dtype == "bfloat16" and np.issubdtype(value.dtype, np.floating):
            value = value.astype(ml_dtypes.bfloat16).view(np.uint16)
        arrays[name] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _read_npz(path: pathlib.Path, dtype: str) -> dict[str, Any]:
    import ml_dtypes

    flat = {}
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            value = npz[name]
            if dtype == "bfloat16" and value.dtype == np.uint16:
                value = value.view(ml_dtypes.bfloat16).astype(np.float32)
            flat[name] = value
    return unflatten_params(flat)


# ----------------------------------------------------------------------------- stages


def resolve_run(run: str | pathlib.Path) -> tuple[str, str | None, str | None]:
    """(rolling, generator, tokenizer) workdirs of RUN.

    RUN is a rolling-decoder workdir (the other two come from its config), or a directory
    holding ``tokenizer/``, ``generator/`` and ``rolling/`` stage workdirs.
    """
    run = pathlib.Path(run)
    if not run.is_dir():
        raise UserError(f"workdir {run} does not exist")
    if all((run / s / "config.json").is_file() for s in STAGES):
        return str(run / "rolling"), str(run / "generator"), str(run / "tokenizer")
    config_path = run / "config.json"
    if config_path.is_file():
        try:
            stage = json.loads(config_path.read_text()).get("stage")
        except json.JSONDecodeError:
            raise UserError(f"{config_path} is not valid JSON") from None
        if stage == "rolling":
            return str(run), None, None
        raise UserError(
            f"{run} is a {stage} workdir; give the rolling decoder's workdir or a directory "
            "holding tokenizer/, generator/ and rolling/"
        )
    raise UserError(
        f"{run} holds neither a config.json nor tokenizer/, generator/ and rolling/ workdirs"
    )


def pipeline_from_workdirs(rolling_workdir: str, generator_workdir=None, tokenizer_workdir=None):
    """A Pipeline straight from training state (what a bundle must reproduce)."""
    from omni_img.sampling.pipeline import Pipeline
    from omni_img.stages.run import load_run

    run = load_run(
        rolling_workdir=rolling_workdir,
        generator_workdir=generator_workdir,
        tokenizer_workdir=tokenizer_workdir,
    )
    return Pipeline.from_run(run)


def model_description(run, dtype: str) -> dict[str, Any]:
    """model.json: enough to rebuild the three Flax modules of a TrainedRun."""
    tokenizer = run.tokenizer
    return {
        "param_storage_dtype": dtype,
        "tokenizer": {
            "spec": dataclasses.asdict(tokenizer.spec),
            "dtype": np.dtype(tokenizer.dtype).name,
        },
        "generator": dataclasses.asdict(run.generator.cfg),
        "rolling": dataclasses.asdict(run.rolling_cfg),
    }


def build_modules(model: Mapping[str, Any]):
    """(Tokenizer, Generator, RollingDecoderConfig) from model.json."""
    import jax.numpy as jnp

    from omni_img.models.bands import rolling_decoder_config
    from omni_img.models.generator import make_generator
    from omni_img.models.tokenizer import Tokenizer, TokenizerConfig

    spec = dict(model["tokenizer"]["spec"])
    for key in ("widths", "fsq_levels"):
        spec[key] = tuple(spec[key])
    tokenizer = Tokenizer(TokenizerConfig(**spec), dtype=jnp.dtype(model["tokenizer"]["dtype"]))
    return tokenizer, make_generator(model["generator"]), rolling_decoder_config(model["rolling"])


# ----------------------------------------------------------------------------- StableHLO


def export_functions(pipeline, sampling) -> dict[str, tuple[bytes, list[str]]]:
    """name -> (serialised ``jax.export`` at batch 1, its platforms) for each EXPORTED."""
    import jax
    import jax.numpy as jnp

    from omni_img.sampling import ar
    from omni_img.sampling import rolling as rolling_sampling
    from omni_img.sampling.pipeline import conv_decode, text_embed, tokenize_images
    from omni_img.sampling.session import edit_conditioning

    spec = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)  # noqa: E731
    gen, gen_p = pipeline.generator, spec(pipeline.generator_params)
    tok, tok_p = pipeline.tokenizer, spec(pipeline.tokenizer_params)
    rcfg, roll_p = pipeline.rolling_cfg, spec(pipeline.rolling_params)
    source = np.zeros((1, *gen.cfg.grid), np.int32) if gen.cfg.use_source else None
    cond = spec(edit_conditioning(pipeline.text_tokenizer, "x", gen.cfg, source))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    grid = jax.ShapeDtypeStruct((1, *gen.cfg.grid), jnp.int32)
    e, mask = jax.eval_shape(lambda p, c: text_embed(gen, p, c), gen_p, cond)
    image = jax.ShapeDtypeStruct((1, *pipeline.image_size, 3), jnp.uint8)

    def decoder(mode):
        return lambda p, t, e, m, k: rolling_sampling.make_sampler(rcfg, mode)(p, t, e, m, k)[0]

    functions = {
        "ar_sample_b1": (lambda p, c, k: ar.sample(gen, p, c, k, sampling), (gen_p, cond, key)),
        "text_embed_b1": (lambda p, c: text_embed(gen, p, c), (gen_p, cond)),
        "rolling_decode_b1": (decoder("rolling"), (roll_p, grid, e, mask, key)),
        "sequential_decode_b1": (decoder("sequential"), (roll_p, grid, e, mask, key)),
        "conv_decode_b1": (lambda p, t: conv_decode(tok, p, t), (tok_p, grid)),
        "tokenize_b1": (lambda p, x: tokenize_images(tok, p, x), (tok_p, image)),
    }
    try:
        import flatbuffers  # noqa: F401  (jax.export's serialisation needs it)
    except ImportError:
        raise UserError(
            "exporting StableHLO needs the flatbuffers package: pip install flatbuffers"
        ) from None
    out = {}
    for name, (fn, args) in functions.items():
        try:
            exported = jax.export.export(jax.jit(fn), platforms=EXPORT_PLATFORMS)(*args)
        except Exception:  # some op has no lowering for a platform: this backend only
            exported = jax.export.export(jax.jit(fn))(*args)
        out[name] = (bytes(exported.serialize()), list(exported.platforms))
    return out


# ----------------------------------------------------------------------------- manifest


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, default=list) + "\n").encode()


def bundle_files(run, dtype: str, sampling):
    """(every file but the manifest: relative path -> contents, exported name -> platforms)
    of a TrainedRun loaded from workdirs (its configs go in too)."""
    from omni_img.sampling.pipeline import Pipeline

    files = {
        "model.json": _json_bytes(model_description(run, dtype)),
        "text_tokenizer.json": _json_bytes(run.text_tokenizer.to_json()),
    }
    for stage in STAGES:
        files[f"configs/{stage}.json"] = _json_bytes(run.configs[stage])
        params = getattr(run, f"{stage}_params")
        files[f"params/{stage}.npz"] = _npz_bytes(flatten_params(params), dtype)
    platforms = {}
    for name, (blob, names) in export_functions(Pipeline.from_run(run), sampling).items():
        files[f"stablehlo/{name}.bin"] = blob
        platforms[name] = names
    return files, platforms


# ----------------------------------------------------------------------------- export


def _check_out_dir(out: pathlib.Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        if not force:
            raise UserError(f"{out} exists and is not a directory; pass --force to replace it")
    elif out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} exists and is not empty; pass --force to overwrite it")


def write_bundle(files: Mapping[str, bytes], manifest: Mapping[str, Any], out_dir, force=False):
    """Write files + manifest into a temporary sibling, then rename it to ``out_dir``."""
    out = pathlib.Path(out_dir).absolute()
    _check_out_dir(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as error:
        raise UserError(f"cannot write the bundle next to {out}: {error.strerror}") from None
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / MANIFEST).write_bytes(_json_bytes(manifest))  # last: its presence = complete
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_bundle(
    rolling_workdir: str,
    out_dir: str | pathlib.Path,
    dtype: str = "float32",
    *,
    generator_workdir: str | None = None,
    tokenizer_workdir: str | None = None,
    force: bool = False,
    sampling=None,
) -> dict[str, Any]:
    """Export a trained run to an inference bundle at ``out_dir``; returns the manifest.

    ``sampling`` (an ``ar.SamplingConfig``, default: its defaults) is baked into the
    exported AR sampler; ``generate`` can still use any. UserError if ``out_dir`` is a
    non-empty directory and not ``force``.
    """
    from omni_img.sampling.ar import DEFAULT_SAMPLING
    from omni_img.stages.run import load_run

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    _check_out_dir(pathlib.Path(out_dir).absolute(), force)  # before minutes of work
    sampling = sampling or DEFAULT_SAMPLING
    run = load_run(
        rolling_workdir=rolling_workdir,
        generator_workdir=generator_workdir,
        tokenizer_workdir=tokenizer_workdir,
    )
    files, platforms = bundle_files(run, dtype, sampling)
    manifest = make_manifest(files, dtype, sampling, platforms)
    write_bundle(files, manifest, out_dir, force)
    return manifest


# ----------------------------------------------------------------------------- load


@dataclasses.dataclass
class Bundle:
    """A loaded bundle: its manifest, id, the Pipeline, and its exported functions."""

    path: pathlib.Path
    manifest: dict[str, Any]
    pipeline: Any  # omni_img.sampling.pipeline.Pipeline

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    def exported(self, name: str):
        """The ``jax.export.Exported`` of an EXPORTED function (call it with ``.call``)."""
        import jax

        if name not in self.manifest["exported"]:
            raise UserError(f"bundle has no exported function {name!r}")
        blob = (self.path / self.manifest["exported"][name]["file"]).read_bytes()
        return jax.export.deserialize(bytearray(blob))


def _read_json(root: pathlib.Path, rel: str) -> Any:
    try:
        return json.loads((root / rel).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"bundle {root}: {rel} is not valid JSON") from None


def load_bundle(path: str | pathlib.Path) -> Bundle:
    """Verify a bundle (see ``verify_bundle``) and build its Pipeline; no workdir needed."""
    from omni_img.sampling.pipeline import Pipeline
    from omni_img.stages.run import TrainedRun
    from omni_img.text.tokenizer import from_json

    root = pathlib.Path(path)
    manifest = verify_bundle(root)
    model = _read_json(root, "model.json")
    where = f"bundle {root}: model.json"
    if not isinstance(model, dict):
        raise UserError(f"{where} is not a JSON object")
    check_fields(model, MODEL_FIELDS, where)
    check_fields(model["tokenizer"], TOKENIZER_FIELDS, where, "tokenizer")
    text_tokenizer = from_json(_read_json(root, "text_tokenizer.json"))
    tokenizer, generator, rolling_cfg = build_modules(model)
    dtype = model["param_storage_dtype"]
    params = {stage: _read_npz(root / f"params/{stage}.npz", dtype) for stage in STAGES}
    run = TrainedRun(
        tokenizer=tokenizer,
        tokenizer_params=params["tokenizer"],
        generator=generator,
        generator_params=params["generator"],
        text_tokenizer=text_tokenizer,
        rolling_cfg=rolling_cfg,
        rolling_params=params["rolling"],
    )
    return Bundle(path=root, manifest=manifest, pipeline=Pipeline.from_run(run))
