"""Logical axis names used by the models, and the default rules that map them to mesh axes.

Parameters and activations use separate names, so that a weight's `embed` axis can be
sharded over `fsdp` while an activation's batch axis is sharded over `data` and `fsdp`
at the same time (one mesh axis may shard only one dimension of an array).

Parameter axes:  embed, mlp, heads, head_dim, vocab, conv_in, conv_out, codebook, norm
Activation axes: act_batch, act_length, act_embed, act_mlp, act_heads, act_vocab
"""

from __future__ import annotations

# (logical name, mesh axis or tuple of mesh axes or None). First match wins.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("codebook", None),
    ("norm", None),
)
