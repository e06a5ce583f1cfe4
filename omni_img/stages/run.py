"""A finished training run's trained objects, in one holder, and the one way to load them.

``TrainedRun`` is what evaluation, export and sampling take: the three stages' modules,
their host EMA params, the text tokenizer and the stages' saved configs. ``load_run``
reads one from training workdirs; ``omni_img.export.load_bundle`` builds one from a
bundle; ``omni_img.sampling.pipeline.Pipeline.from_run`` makes it ready to sample.

Imports here stay light (the CLI's ``--help`` imports the export package): the stages
and JAX are imported when a run is loaded.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class TrainedRun:
    """The trained models of a run and their (host) EMA params.

    rolling_cfg / rolling_params: the rolling decoder's config and variables
    (``{"params": ...}``), None for a run evaluated without one. configs: each loaded
    stage's resolved training config as a dict ("tokenizer", "generator", "rolling"),
    empty for a run built from a bundle.
    """

    tokenizer: Any
    tokenizer_params: Any
    generator: Any
    generator_params: Any
    text_tokenizer: Any
    rolling_cfg: Any = None
    rolling_params: Any = None
    configs: dict[str, dict] = dataclasses.field(default_factory=dict)


def load_run(
    *,
    rolling_workdir: str | None = None,
    generator_workdir: str | None = None,
    tokenizer_workdir: str | None = None,
) -> TrainedRun:
    """The stages of a training run, from their workdirs (latest checkpoints, EMA params,
    on the host, unboxed).

    With a rolling-decoder workdir, the generator and tokenizer workdirs default to those
    its config names; without one, both must be given and the run has no rolling decoder.
    The generator is loaded once: the rolling decoder's E width and token grid are the
    loaded generator's.
    """
    from omni_img.config.saved import load_saved_config
    from omni_img.errors import UserError
    from omni_img.stages import generator as generator_stage
    from omni_img.stages import tokenizer as tokenizer_stage

    rolling_config = load_saved_config(rolling_workdir) if rolling_workdir else None
    if rolling_config is not None:
        generator_workdir = generator_workdir or rolling_config.generator_workdir
        tokenizer_workdir = tokenizer_workdir or rolling_config.tokenizer_workdir
    if not (generator_workdir and tokenizer_workdir):
        raise UserError("a run needs a tokenizer and a generator workdir (or a rolling one)")
    tok_config, tok_model, tok_params = tokenizer_stage.load_workdir(tokenizer_workdir)
    gen_config, gen_model, gen_params, text_tokenizer = generator_stage.load_workdir(
        generator_workdir
    )
    run = TrainedRun(
        tokenizer=tok_model,
        tokenizer_params=_on_host(tok_params),
        generator=gen_model,
        generator_params=_on_host(gen_params),
        text_tokenizer=text_tokenizer,
        configs={"tokenizer": tok_config.to_dict(), "generator": gen_config.to_dict()},
    )
    if rolling_config is not None:
        _add_rolling(run, rolling_config, rolling_workdir)
    return run


def _add_rolling(run: TrainedRun, config, workdir: str) -> None:
    """Restore the rolling decoder of `workdir` onto `run`'s generator."""
    from omni_img.stages import rolling as rolling_stage

    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
    generator_cfg = run.generator.cfg
    metadata = {"grid": list(generator_cfg.grid), "num_codes": generator_cfg.image_vocab_size}
    run.rolling_cfg, params = rolling_stage.restore_decoder(
        config, workdir, metadata, generator_cfg.dim
    )
    run.rolling_params = _on_host(params)
    run.configs["rolling"] = config.to_dict()


def _on_host(tree):
    """Params as plain host arrays (logical-partitioning boxes removed)."""
    import flax.linen as nn
    import jax

    return jax.device_get(nn.unbox(tree))
