"""Text-to-image at 256 px: a ~300M-parameter AR decoder over 16x16 tokens (LlamaGen-B/L class).

    omni-img train --config experiments/t2i_256.py:gpu8 --workdir gs://.../t2i_256 \
        --config.data.tokenized_dir=/data/tokens_256

Not trainable on a CPU: its shapes and shardings are checked in tests with
`jax.eval_shape` and lowering only. The argument picks a mesh preset:
  gpu8      one 8-GPU node: fsdp over all 8 devices (params, grads and optimizer sharded)
  gpu32     4 x 8 GPUs: data 4 x fsdp 8
  tpu_v5p64 a v5p-64-like slice (32 chips x 2 cores): data 4 x fsdp 8 x tensor 2
Decoder: 16 layers, width 1024, 16 heads, SwiGLU 2816, codebook 16384 (~306M params);
encoder: 6 layers (~78M). bf16 compute, fp32 params, remat on.
"""

import ml_collections

from omni_img.config.defaults import training_defaults

MESH_PRESETS = {
    "gpu8": {"data": 1, "fsdp": 8, "tensor": 1},
    "gpu32": {"data": 4, "fsdp": 8, "tensor": 1},
    "tpu_v5p64": {"data": 4, "fsdp": 8, "tensor": 2},
}


def get_config(arg=None):
    preset = arg or "gpu8"
    if preset not in MESH_PRESETS:
        raise ValueError(f"unknown mesh preset {preset!r}; presets: {sorted(MESH_PRESETS)}")
    config = training_defaults()
    config.stage = "generator"
    config.mesh = ml_collections.ConfigDict(MESH_PRESETS[preset])
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
    config.checkpoint.keep_every = 50_000
    config.caption_dropout = 0.1
    config.text_tokenizer = "bytes"
    config.data.tokenized_dir = ""
    config.data.task_weights = ml_collections.ConfigDict({"compose": 1.0})
    config.model = ml_collections.ConfigDict(
        {
            "text_vocab_size": 264,
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
    config.sampling = ml_collections.ConfigDict(
        {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 4.0}
    )
    config.eval = ml_collections.ConfigDict({"num_examples": 1024, "batch_size": 64})
    return config
