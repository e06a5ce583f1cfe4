"""The generator's conditioning batch: prompt ids, source tokens and earlier turns.

Training (``omni_img.stages.generator.conditioning_example``), sessions and the server
(``omni_img.sampling.session.edit_conditioning``) all build the batch here, so what a
model sees at sampling time is laid out exactly as what it trained on. The callers keep
what differs between them: how a prompt becomes ids (training shortens an over-long
caption, sampling refuses it) and whether the source keys are present (see
``conditioning``). The keys are ``omni_img.models.generator.CONDITION_KEYS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from omni_img.models.generator import GeneratorConfig
from omni_img.text.tokenizer import SEP_ID, TextTokenizer, pad_ids


def pack_history(
    tok: TextTokenizer, instructions: Sequence[str], max_len: int
) -> tuple[list[int], int]:
    """Earlier instructions -> (ids oldest-first with SEP after each, number of turns kept).

    Whole turns are taken newest first while they fit in ``max_len``; the oldest are
    dropped (never cut in the middle: training sees whole turns only). Matches the
    generator trainer's history encoding.
    """
    raw: list[int] = []
    ids: list[int] = []
    kept = 0
    for text in reversed(instructions):
        candidate = [*tok.encode(text), SEP_ID, *raw]
        laid_out = tok.layout(candidate)
        if len(laid_out) > max_len:
            break
        raw, ids = candidate, laid_out
        kept += 1
    return ids, kept


def conditioning(
    tok: TextTokenizer,
    prompt_ids: Sequence[int],
    cfg: GeneratorConfig,
    *,
    source_tokens: Any = None,
    has_source: bool = False,
    history: Sequence[str] = (),
    source_keys: bool,
) -> dict[str, np.ndarray]:
    """A batch-of-one conditioning dict for the generator (see ``models.generator``).

    ``source_tokens``: int32 (1, h, w), or None for zeros; ``has_source`` says whether
    the model is to use them. ``source_keys``: whether the dict has the two source keys
    at all. The trainer always gives them (a text-only model ignores them, and every
    batch of a run keeps one layout); sampling gives them only to a model that reads a
    source (``cfg.use_source``), as it always has.
    """
    text_ids, text_mask = pad_ids([list(prompt_ids)], cfg.max_text_len)
    cond = {"text_ids": text_ids, "text_mask": text_mask}
    if source_keys:
        if source_tokens is None:
            source_tokens = np.zeros((1, *cfg.grid), np.int32)
        cond["source_tokens"] = np.asarray(source_tokens, np.int32)
        cond["has_source"] = np.full((1,), has_source, bool)
    if cfg.max_history_len > 0:
        ids, _ = pack_history(tok, history, cfg.max_history_len)
        cond["history_ids"], cond["history_mask"] = pad_ids([ids], cfg.max_history_len)
    return cond
