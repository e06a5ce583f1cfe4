"""omni_img.sampling: ``ar`` (AR token sampling, KV cache, CFG, streaming rows) and
``session`` (edits and multi-turn sessions)."""
