"""A small synthetic tokenized dataset (random grids, real captions) for trainer tests."""

import json

import numpy as np

from omni_img.data.tokenized import write_split

CAPTIONS = {
    "compose": "a red circle on the left",
    "write": 'a blue sign that says "river"',
    "edit": "make it green",
}


def write_tokenized(directory, count=96, grid=(4, 4), num_codes=64, tokenizer_workdir=None):
    """Train and validation splits; with `tokenizer_workdir`, their metadata names the
    tokenizer (as `omni-img tokenize` writes it), so the generator can decode samples."""
    rng = np.random.default_rng(0)
    tasks = ["compose", "write", "edit"]

    def records():
        for index in range(count):
            task = tasks[index % 3]
            yield {
                "target_tokens": rng.integers(0, num_codes, grid).astype(np.int16),
                "source_tokens": rng.integers(0, num_codes, grid).astype(np.int16),
                "has_source": task == "edit",
                "index": index,
                "caption": CAPTIONS[task],
                "history": json.dumps(["add a square"] if task == "edit" else []),
                "task": task,
                "spec": "{}",
                "edit_op": "recolour" if task == "edit" else "",
            }

    extra = {"tokenizer_workdir": str(tokenizer_workdir)} if tokenizer_workdir else None
    for split in ("train", "validation"):
        write_split(directory, split, records(), grid=grid, num_codes=num_codes,
                    extra_metadata=extra)  # fmt: skip
    return directory
