"""Helpers shared by several test modules; tests import these, never each other or a
conftest.

- tiny_configs: the tiny tokenizer and generator configs the trainer tests train
- synthetic: a small deterministic in-memory image source
- tokenized: a small synthetic tokenized dataset (random grids, real captions)
- workers: the tokenizer worker subprocess (tests/training/run_tokenizer.py) and its
  finished checkpoints
- multiprocess: launch/local_multiprocess.sh around tests/launch/run_stage.py
- bundles: the tiny trained run behind the shared bundle fixtures (tests/conftest.py)
- http: serve limits, PNG and server-sent-event helpers for tests/serve
"""
