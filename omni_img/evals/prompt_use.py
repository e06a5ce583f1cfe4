"""Does the generator read a word of the prompt? A word-swap test on teacher-forced NLL.

For single-object compose records whose caption names the object's shape and colour by
their canonical words (records that use a synonym are skipped), the object tokens'
negative log-likelihood of the true image is computed under the true caption and under
the caption with one attribute word swapped for another value of that attribute. A
model that uses the word finds the true image much less likely under the wrong word; a
model that reads the attribute off the image rows it has already written (teacher
forcing hands it those rows) barely notices. Object tokens are those that differ from
the image's most frequent token (its background).

    report = word_reliance(model, params, text_tokenizer, records, attributes=("shape",))
    report["shape"] -> {"n", "nll_true", "nll_swapped", "increase", "share_increased"}

The NLLs are sums over an image's object tokens, in nats, averaged over the records.

``encoder_probe`` asks the same question of the encoder alone: a ridge-regression probe
from the mean of its output over the prompt's positions to the object's shape and
colour, fitted on the first 3/4 of the records and scored on the rest (accuracy; chance
is one over the number of values).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from omni_img.world.spec import OBJECT_COLOURS, SHAPES, spec_from_json

VALUES = {"shape": SHAPES, "colour": OBJECT_COLOURS}


def _word_pattern(word: str) -> re.Pattern:
    return re.compile(rf"\b{re.escape(word)}(e?s)?\b")


def swapped_caption(caption: str, attribute: str, value: str) -> str | None:
    """The caption with the attribute's word replaced by the next value of its list
    (plurals kept), or None when the caption does not use the canonical word."""
    pattern = _word_pattern(value)
    if not pattern.search(caption):
        return None
    values = VALUES[attribute]
    other = values[(values.index(value) + 1) % len(values)]
    plural = other + ("es" if other.endswith("s") else "s")
    swapped = pattern.sub(lambda m: plural if m.group(1) else other, caption)
    # "a red" -> "an orange" and back: keep the swap the only change a reader would see.
    swapped = re.sub(r"\b([aA])n? (?=[aeiou])", r"\1n ", swapped)
    return re.sub(r"\b([aA])n (?=[^aeiou\W])", r"\1 ", swapped)


def eligible_records(records: Sequence[dict], attributes: Sequence[str]) -> list[dict]:
    """Single-object compose records whose caption has every attribute's canonical word."""
    chosen = []
    for record in records:
        if record["task"] != "compose":
            continue
        objects = spec_from_json(record["spec"]).objects
        if len(objects) != 1:
            continue
        obj = objects[0]
        values = {"shape": obj.shape, "colour": obj.colour}
        if all(_word_pattern(values[a]).search(record["caption"]) for a in attributes):
            chosen.append(dict(record, _values=values))
    return chosen


def _batches(model, text_tokenizer, records: Sequence[dict], batch_size: int):
    """The generator's batch dicts for consecutive chunks of ``records``."""
    from omni_img.stages.generator import conditioning_example

    for start in range(0, len(records), batch_size):
        examples = [
            conditioning_example(r, tokenizer=text_tokenizer, model_cfg=model.cfg)
            for r in records[start : start + batch_size]
        ]
        yield {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def object_token_nll(
    model, params, text_tokenizer, records: Sequence[dict], batch_size: int = 32
) -> np.ndarray:
    """(R,) summed NLL of each record's object tokens (those unlike its background)."""
    apply = jax.jit(lambda p, b: jax.nn.log_softmax(model.apply({"params": p}, b), -1))
    out = []
    for batch in _batches(model, text_tokenizer, records, batch_size):
        logp_BxNxV = np.asarray(apply(params, batch))
        target_BxN = batch["target_tokens"].reshape(len(logp_BxNxV), -1)
        nll_BxN = -np.take_along_axis(logp_BxNxV, target_BxN[..., None], -1)[..., 0]
        for nll_N, target_N in zip(nll_BxN, target_BxN, strict=True):
            background = np.bincount(target_N).argmax()
            out.append(float(nll_N[target_N != background].sum()))
    return np.asarray(out)


def word_reliance(
    model,
    params,
    text_tokenizer,
    records: Sequence[dict],
    attributes: Sequence[str] = ("shape", "colour"),
) -> dict[str, Any]:
    """{attribute: {n, nll_true, nll_swapped, increase, share_increased}} (see above)."""
    unknown = sorted(set(attributes) - set(VALUES))
    if unknown:
        raise ValueError(f"unknown attributes {unknown}; known: {sorted(VALUES)}")
    chosen = eligible_records(records, attributes)
    if not chosen:
        raise ValueError("no single-object compose record names its shape and colour plainly")
    true_nll = object_token_nll(model, params, text_tokenizer, chosen)
    report: dict[str, Any] = {}
    for attribute in attributes:
        swapped = [
            dict(r, caption=swapped_caption(r["caption"], attribute, r["_values"][attribute]))
            for r in chosen
        ]
        swapped_nll = object_token_nll(model, params, text_tokenizer, swapped)
        report[attribute] = {
            "n": len(chosen),
            "nll_true": float(true_nll.mean()),
            "nll_swapped": float(swapped_nll.mean()),
            "increase": float((swapped_nll - true_nll).mean()),
            "share_increased": float((swapped_nll > true_nll).mean()),
        }
    return report


def encoder_probe(
    model, params, text_tokenizer, records: Sequence[dict], ridge: float = 1e-2
) -> dict[str, float]:
    """{attribute: held-out accuracy of a linear probe on the mean-pooled encoder output}
    for single-object compose records (see the module docstring)."""
    chosen = eligible_records(records, ())
    if len(chosen) < 8:
        raise ValueError(f"the probe needs at least 8 single-object records, got {len(chosen)}")
    encode = jax.jit(lambda p, b: model.apply({"params": p}, b, method="encode"))
    pooled = []
    for batch in _batches(model, text_tokenizer, chosen, 64):
        batch.pop("target_tokens")
        e_BxSxD, mask_BxS = (np.asarray(x) for x in encode(params, batch))
        weights_BxS = mask_BxS / mask_BxS.sum(1, keepdims=True)
        pooled.append(np.einsum("bs,bsd->bd", weights_BxS, e_BxSxD))
    x = np.concatenate(pooled)
    x = np.hstack([x, np.ones((len(x), 1))])  # a bias column
    fit = len(x) * 3 // 4
    report = {}
    for attribute, values in VALUES.items():
        labels = np.array([values.index(r["_values"][attribute]) for r in chosen])
        one_hot = np.eye(len(values))[labels]
        gram = x[:fit].T @ x[:fit] + ridge * np.eye(x.shape[1])
        weights = np.linalg.solve(gram, x[:fit].T @ one_hot[:fit])
        report[attribute] = float(np.mean((x[fit:] @ weights).argmax(1) == labels[fit:]))
    return report
