"""ImageNet 256 px, class-conditional: LlamaGen's c2i decoder over 16x16 tokens.

    omni-img train --config experiments/c2i_imagenet256.py:L,gpu32,fsdp --workdir DIR \
        --config.data.tokenized_dir=/data/imagenet256_tokens

Argument: `SIZE,TARGET[,LAYOUT]`, SIZE `B` (dim 768, 12 layers, ~111M params) or `L`
(dim 1024, 24 layers, ~343M), TARGET and LAYOUT a mesh preset (see
omni_img/config/meshes.py; default gpu8,fsdp). The decoder starts each sequence with
its class token and has no cross-attention and no text encoder; 10 % of labels are
dropped to the null class for classifier-free guidance. Needs the token grids of a
16x16 / 16,384-code tokenizer with the labels kept (`omni-img tokenize` stores a
record's `label`): those of `imagenet2012_256` (TFDS imagenet2012 converted by
`omni-img data tfds`, then tokenized; without them the run stops before compiling and
says how to make them). Not trainable on a CPU: `omni-img compile` checks its memory;
trained shrunk on a mock imagenet2012 in tests/data/test_train_on_formats.py.
"""

import ml_collections

from omni_img.config.defaults import generator_defaults
from omni_img.config.meshes import apply_mesh_preset

PREPARE = (
    "convert imagenet2012 (see experiments/tokenizer_imagenet256.py), train "
    "experiments/tokenizer_imagenet256.py into TOKENIZER, then `omni-img tokenize "
    "--tokenizer TOKENIZER --split train --split validation --out TOKENS` and pass "
    "--config.data.tokenized_dir=TOKENS (docs/data.md, section TFDS)"
)

SIZES = {
    "B": {"dim": 768, "num_heads": 12, "dec_layers": 12, "mlp_dim": 2048},
    "L": {"dim": 1024, "num_heads": 16, "dec_layers": 24, "mlp_dim": 2816},
}


def get_config(arg=None):
    parts = [p for p in (arg or "").split(",") if p]
    size = parts.pop(0) if parts and parts[0] in SIZES else "L"
    config = generator_defaults()
    apply_mesh_preset(config, ",".join(parts), default="gpu8,fsdp")
    config.batch_size = 256
    config.num_steps = 300_000
    config.compute_dtype = "bfloat16"
    config.remat = True
    config.log_every = 100
    config.eval_every = 5000
    config.ema_decay = 0.9999
    config.optim.lr = 1e-4 if size == "L" else 2e-4
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
    config.caption_dropout = 0.1  # drops the class label to the null class
    config.input_masking = 0.0  # up to this share of decoder inputs hidden in training
    config.text_tokenizer = "bytes"  # unused: no text
    config.data.name = "imagenet2012_256"  # the tokens of TFDS imagenet2012 at 256 px
    config.data.prepare = PREPARE
    config.data.tokenized_dir = ""
    config.data.task_weights = ml_collections.ConfigDict()  # ImageNet has no tasks
    config.model.update(
        {
            "num_classes": 1000,
            "grid_h": 16,
            "grid_w": 16,
            "image_vocab_size": 16384,
            "max_text_len": 2,
            "max_history_len": 0,
            "use_source": False,
            "enc_layers": 0,
            **SIZES[size],
            "mlp_kind": "swiglu",
            "rope": True,
        }
    )
    config.sampling.update({"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 2.0})
    config.eval.update({"num_examples": 1024, "batch_size": 64})
    return config
