"""The judge's own test: ground truth must pass, one-attribute perturbations must fail.

`self_test(n_per_task)` takes the first n examples of each task of a split, judges the
ground-truth renders (expected: pass), renders of perturbed specs and ground-truth
renders with an extra object or surface painted on (`perturb.DRAWN_*_KINDS`), each judged
against the original spec (expected: fail), and reports the rates per task and per
perturbation kind. Run it with `python -m omni_img.world.judge_selftest --n 1000`.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from typing import Any

from omni_img.world import perturb
from omni_img.world.examples import ExampleSpec, example_specs
from omni_img.world.judge import judge_batch
from omni_img.world.render import render


def first_examples(seed: int, split: str, n_per_task: int) -> dict[str, list[ExampleSpec]]:
    """{task: the first n_per_task unrendered examples of that task in the split}."""
    specs = example_specs(seed, split, 0, 3 * n_per_task)
    out: dict[str, list[ExampleSpec]] = defaultdict(list)
    for spec in specs:
        out[spec.task].append(spec)
    return dict(out)


def _perturbations(example: ExampleSpec) -> dict[str, Any]:
    """{kind: perturbed target scene} for the kinds that apply to this example."""
    scene = example.scene
    kinds = perturb.WRITE_KINDS if scene.word is not None else perturb.COMPOSE_KINDS
    out = {}
    for kind, function in kinds.items():
        if example.task == "edit" and kind not in ("colour", "letter", "background"):
            continue  # edits get the target kinds above plus the two edit-specific ones
        changed = function(scene, random.Random(f"perturb/{example.index}/{kind}"))
        if changed is not None and perturb.differs(changed, scene):
            out[kind] = changed
    if example.task == "edit":
        rng = random.Random(f"perturb/{example.index}/untouched")
        moved = perturb.untouched_moved(example.source, scene, rng)
        if moved is not None and perturb.differs(moved, scene):
            out["untouched_moved"] = moved
        if perturb.differs(example.source, scene):
            out["edit_not_applied"] = example.source
    return out


def _drawn(example: ExampleSpec, image: Any) -> dict[str, Any]:
    """{kind: the target's render with one extra thing painted on} for the kinds that fit."""
    scene = example.scene
    kinds = perturb.DRAWN_WRITE_KINDS if scene.word is not None else perturb.DRAWN_COMPOSE_KINDS
    out = {}
    for kind, function in kinds.items():
        changed = function(scene, image, random.Random(f"perturb/{example.index}/{kind}"))
        if changed is not None:
            out[kind] = changed
    return out


def self_test(
    n_per_task: int = 1000, resolution: int = 64, seed: int = 0, split: str = "test"
) -> dict[str, Any]:
    """Pass rate on ground truth per task and fail rate per (task, perturbation kind)."""
    report: dict[str, Any] = {"n_per_task": n_per_task, "resolution": resolution, "split": split}
    failures: dict[str, list[str]] = defaultdict(list)
    for task, examples in first_examples(seed, split, n_per_task).items():
        images, specs, tasks, sources, source_specs, labels = [], [], [], [], [], []
        for example in examples:
            source_image = None if example.source is None else render(example.source, resolution)
            image = render(example.scene, resolution)
            cases = {"ground_truth": image, **_drawn(example, image)}
            cases |= {k: render(s, resolution) for k, s in _perturbations(example).items()}
            for kind, case in cases.items():
                images.append(case)
                specs.append(example.scene)
                tasks.append(task)
                sources.append(source_image)
                source_specs.append(example.source)
                labels.append((kind, example.index))
        verdicts = judge_batch(images, specs, tasks, sources, source_specs)
        by_kind: dict[str, list[bool]] = defaultdict(list)
        for (kind, index), verdict in zip(labels, verdicts, strict=True):
            by_kind[kind].append(verdict.passed)
            wrong = verdict.passed if kind != "ground_truth" else not verdict.passed
            if wrong and len(failures[f"{task}/{kind}"]) < 5:
                failures[f"{task}/{kind}"].append(f"#{index}: {verdict.reason}")
        report[task] = {
            "ground_truth_pass": _rate(by_kind.pop("ground_truth")),
            "perturbed_fail": {k: 1 - _rate(v) for k, v in sorted(by_kind.items())},
            "perturbed_n": {k: len(v) for k, v in sorted(by_kind.items())},
            "n": len(examples),
        }
    report["examples_of_mistakes"] = dict(failures)
    return report


def _rate(values: list[bool]) -> float:
    return sum(values) / max(1, len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="examples per task")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print(json.dumps(self_test(args.n, args.resolution, split=args.split), indent=1))


if __name__ == "__main__":
    main()
