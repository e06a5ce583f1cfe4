"""The quality recipe: every stage, end to end, with longer budgets (71 minutes of
training on a 2-core CPU, 90 minutes in all, as measured in docs/models.md).

    omni-img demo --config experiments/omni_quality.py --workdir runs/quality

The main job's stages and report (experiments/omni_tiny.py) with each stage's own
experiment file at its full length: 200k training records (`omni_shapes/64px_200k`,
built by the job), 2,000 tokenizer steps, the generator of experiments/generator_tiny.py
(2x2 blocks, the best recipe measured over an hour: docs/models.md, "What 60 minutes
reach") for 50 minutes, 8 minutes of rolling decoder, the rFID of both decoders on 1,000
validation images, and 300 judged test prompts a task. Its figures are in docs/models.md
("The quality recipe").
"""

import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("omni_tiny", HERE / "omni_tiny.py")
omni_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(omni_tiny)


def get_config(arg=None):
    config = omni_tiny.get_config()  # the job's keys and its report
    config.dataset = "omni_shapes/64px_200k"

    config.tokenizer = omni_tiny.experiment_config("tokenizer_tiny")
    config.tokenizer.max_minutes = 13.0  # 2,000 steps take about 12.5 minutes

    config.generator = omni_tiny.experiment_config("generator_tiny")
    config.generator.mesh_devices = 2  # 1.4x the steps/s of all 8 (see omni_tiny.py)
    # The schedule's length; the 50 minutes reached 5,221 steps at 1.74 steps/s.
    config.generator.num_steps = 6300
    config.generator.max_minutes = 50.0
    config.generator.eval_every = 0
    config.generator.eval.judge_per_task = 0  # the job's report judges the end point
    config.generator.eval.episodes = 0

    config.rolling = omni_tiny.experiment_config("rolling_tiny")
    config.rolling.max_minutes = 8.0
    config.rolling.eval.rfid_images = 1000

    config.report.per_task = 300
    config.report.episodes = 64
    # The generator's own sampling, chosen on validation scenes (generator_tiny.py).
    config.report.cfg_scale = config.generator.sampling.cfg_scale
    return config
