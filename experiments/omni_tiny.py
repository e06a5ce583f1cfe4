"""The main job: every stage, end to end, on the built-in omni_shapes data (CPU).

    omni-img demo --workdir runs/demo

Builds the dataset, trains tokenizer -> generator -> rolling decoder (each with a
budget), tokenizes the data once in between, exports an inference bundle, and writes
sample grids and a report (judge accuracy per task with the conv and the rolling
decoder, PSNR and rFID of both decoders). Budgets on 8 CPU devices of a 2-core machine:
750 tokenizer steps capped at 7 minutes, 800 generator steps (on 2 of the devices)
capped at 6.6 and 1 minute of rolling decoder, sized so the whole README command stays
under 25 minutes; the steps each cap reached and the stages' timings are in
docs/main_job_report.md and docs/models.md ("One process, four stages").
Each stage's config is the stage's own experiment file, shortened here.
"""

import importlib.util
import pathlib

import ml_collections

HERE = pathlib.Path(__file__).resolve().parent


def experiment_config(name: str) -> ml_collections.ConfigDict:
    """The config of experiments/NAME.py (also what experiments/omni_quality.py builds on)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.dataset = "omni_shapes"  # built with its default config (64 px)
    # On a CPU host: 8 XLA devices, data parallel over the cores, so the job runs the
    # sharded path of a multi-device host (on 2 cores about as fast as 1 device, see
    # docs/training.md); every stage's mesh takes them all.
    config.cpu_devices = 8
    config.data_dir = ""  # empty: $TFDS_DATA_DIR or ~/tensorflow_datasets

    # Step counts sized to the caps, so each schedule decays to (or near) its end within
    # them at the speeds fresh-clone runs measured (docs/models.md "One process, four
    # stages").
    config.tokenizer = experiment_config("tokenizer_tiny")
    config.tokenizer.num_steps = 750
    config.tokenizer.max_minutes = 7.0  # a safety cap on a loaded machine
    config.generator = experiment_config("generator_tiny")
    # The generator steps about 1.4x as fast on 2 of the 8 devices as on all 8 (the
    # tokenizer the other way round): docs/models.md, "One process, four stages".
    config.generator.mesh_devices = 2
    config.generator.num_steps = 800
    config.generator.max_minutes = 6.6  # a safety cap on a loaded machine
    config.generator.eval_every = 0
    config.generator.eval.judge_per_task = 0  # the job's own report judges the samples
    config.generator.eval.episodes = 0  # and the chained episodes
    config.generator.eval.curve_every_minutes = 0.0  # the report judges the end point
    # A short run: a decoder position covers a 4x4 block of tokens (16 positions, not 64):
    # at equal minutes its samples draw the prompts' objects where 2x2 blocks drew almost
    # only backgrounds (docs/models.md, "The main job's generator"); a higher peak learning
    # rate, a short warmup, object tokens weighed 4x, and Muon.
    config.generator.model.group = 4
    config.generator.optim.lr = 3e-3
    # Muon for the transformer blocks' kernels: 13 % lower validation NLL than AdamW at the
    # same 8 minutes (docs/models.md, "The main job's generator: Muon").
    config.generator.optim.name = "muon"
    config.generator.optim.warmup_steps = 50
    config.generator.foreground_weight = 4.0
    config.generator.data.task_weights = ml_collections.ConfigDict(
        {"compose": 0.5, "write": 0.25, "edit": 0.25}
    )

    config.rolling = experiment_config("rolling_tiny")
    config.rolling.max_minutes = 1.0
    config.rolling.eval.num_examples = 64
    # rFID of both decoders on 1,000 validation images: 3,000 images through Inception
    # and 1,000 rolling samples, about 7.3 minutes on 2 cores, paid for by 150 fewer
    # tokenizer steps, 50 fewer generator steps and half a minute less rolling decoder.
    config.rolling.eval.rfid_images = 1000

    # The report: generated samples judged per task on the test split.
    config.report = ml_collections.ConfigDict(
        {
            "per_task": 64,
            "seed": 0,
            "temperature": 0.0,  # greedy: the most likely image for each prompt
            "top_k": 0,
            "cfg_scale": 1.0,
            "decoders": ("conv", "rolling"),
            "episodes": 32,  # 3-turn edit episodes, each turn editing the last output
        }
    )
    return config
