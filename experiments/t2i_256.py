"""Text-to-image at 256 px: a ~300M-parameter AR decoder over 16x16 tokens (LlamaGen-B/L class).

    omni-img train --config experiments/t2i_256.py:gpu8,fsdp --workdir gs://.../t2i_256 \
        --config.data.tokenized_dir=/data/tokens_256

Not trainable on a CPU: `omni-img compile` checks its memory and collectives, tests
its shapes and shardings. The argument is a mesh preset `TARGET[,LAYOUT]` (targets
gpu8, gpu32, tpu_v5p64; layouts pure_dp, fsdp, fsdp_tp; see omni_img/config/meshes.py),
default gpu8,fsdp. Decoder: 16 layers, width 1024, 16 heads, SwiGLU 2816, codebook
16384 (~306M params); encoder: 6 layers (~78M). bf16 compute, fp32 params, remat on.
Trains on the tokens of `coco2017_256` (COCO captions converted by `omni-img data coco`,
a caption drawn per step from each image's five) or any captioned conversion
(WebDataset, Parquet); without them the run stops before compiling and says how to
make them. Trained shrunk on such data in tests/data/test_train_on_formats.py.
"""

import ml_collections

from omni_img.config.defaults import generator_defaults
from omni_img.config.meshes import apply_mesh_preset

PREPARE = (
    "omni-img data coco --images train2017 --annotations "
    "annotations/captions_train2017.json --name coco2017_256 --processes 16 (and "
    "val2017 as --split validation), train experiments/tokenizer_imagenet256.py (or "
    "reuse one), `omni-img tokenize --tokenizer TOKENIZER --dataset coco2017_256 "
    "--split train --split validation --out TOKENS` and pass "
    "--config.data.tokenized_dir=TOKENS (docs/data.md, section COCO captions)"
)


def get_config(arg=None):
    config = generator_defaults()
    apply_mesh_preset(config, arg, default="gpu8,fsdp")
    config.batch_size = 256
    config.num_steps = 300_000
    config.compute_dtype = "bfloat16"
    config.remat = True
    config.log_every = 100
    config.eval_every = 5000
    config.ema_decay = 0.9999
    config.optim.lr = 3e-4
    config.optim.warmup_steps = 5000
    config.optim.weight_decay = 0.05
    config.optim.b2 = 0.95
    config.checkpoint.every_steps = 5000
    config.checkpoint.every_minutes = 30.0
    # No second copy of the state in accelerator memory while a save is in flight. What
    # Orbax does on the loop's thread grows with the number of arrays, not with the
    # step, so at seconds a step it should be a small share (not measured on a GPU).
    config.checkpoint.device_snapshot = False
    config.checkpoint.keep_every = 50_000
    config.caption_dropout = 0.1
    config.input_masking = 0.0  # up to this share of decoder inputs hidden in training
    config.text_tokenizer = "bytes"
    config.data.name = "coco2017_256"  # the tokens of COCO captions 2017 at 256 px
    config.data.prepare = PREPARE
    config.data.tokenized_dir = ""
    # Captioned images (COCO, WebDataset, Parquet conversions); omni_shapes tokens at
    # 256 px: --config.data.task_weights='{"compose": 1.0}' or its three tasks.
    config.data.task_weights = ml_collections.ConfigDict({"caption": 1.0})
    config.model.update(
        {
            "text_vocab_size": 264,
            "grid_h": 16,
            "grid_w": 16,
            "image_vocab_size": 16384,
            "max_text_len": 128,
            "max_history_len": 0,
            "use_source": False,
            "dim": 1024,
            "num_heads": 16,
            "enc_layers": 6,
            "dec_layers": 16,
            "mlp_dim": 2816,
            "mlp_kind": "swiglu",
            "rope": True,
        }
    )
    config.sampling.update({"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 4.0})
    config.eval.update({"num_examples": 1024, "batch_size": 64})
    return config
