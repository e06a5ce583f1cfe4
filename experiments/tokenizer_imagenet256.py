"""Tokenizer for 256 px images: 16x16 tokens, codebook 16384 (the LlamaGen-B tokenizer's class).

    omni-img data tfds --dataset imagenet2012 --split train --name imagenet2012_256
    omni-img data tfds --dataset imagenet2012 --split validation --name imagenet2012_256
    omni-img train --config experiments/tokenizer_imagenet256.py --workdir DIR \
        --config.mesh.fsdp=8

l2-normalised VQ with an 8-dimensional lookup and an entropy penalty. Not trained on a
CPU: shape-checked in tests, and trained shrunk on a mock imagenet2012 in
tests/data/test_train_on_formats.py. Expects `imagenet2012_256`: TFDS imagenet2012
converted to 256 px (any other dataset of 256 px records: --config.data.name=NAME,
e.g. a COCO, WebDataset or Parquet conversion; docs/data.md).
"""

from omni_img.config.defaults import tokenizer_defaults

CONVERT = (
    "omni-img data tfds --dataset imagenet2012 --split train --name imagenet2012_256 "
    "--processes 16 && omni-img data tfds --dataset imagenet2012 --split validation "
    "--name imagenet2012_256 (imagenet2012 built first by `tfds build imagenet2012 "
    "--file_format=array_record --manual_dir=DIR`; docs/data.md, section TFDS)"
)


def get_config(arg=None):
    config = tokenizer_defaults()
    config.batch_size = 128
    config.num_steps = 200_000
    config.compute_dtype = "bfloat16"
    config.log_every = 100
    config.ema_decay = 0.9999
    config.optim.lr = 1e-4
    config.optim.warmup_steps = 2000
    config.optim.b2 = 0.95
    config.checkpoint.every_steps = 5000
    config.checkpoint.every_minutes = 30.0
    # No second copy of the state in accelerator memory while a save is in flight. What
    # Orbax does on the loop's thread grows with the number of arrays, not with the
    # step, so at seconds a step it should be a small share (not measured on a GPU).
    config.checkpoint.device_snapshot = False
    config.data.name = "imagenet2012_256"
    config.data.prepare = CONVERT
    config.model.update(
        {
            "image_size": 256,
            "patch_size": 16,
            "widths": (64, 128, 256, 512),
            "num_res_blocks": 2,
            "high_res_blocks": 2,
            "quantizer": "vq",
            "fsq_levels": (8, 8, 8, 5, 5, 5),
            "codebook_size": 16384,
            "code_dim": 8,
            "commitment": 0.25,
            "entropy_weight": 0.1,
            "entropy_temperature": 0.01,
        }
    )
    config.loss.update({"l1": 1.0, "l2": 1.0, "adversarial": 0.1})
    config.eval.update({"num_examples": 1000, "batch_size": 64})
    return config
