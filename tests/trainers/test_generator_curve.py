"""The generator's learning curve: curve.jsonl gets a line per mark, and a resumed run's
curve goes on from its last mark."""

import json

import ml_collections

from omni_img.trainers import generator


class _Source:
    metadata = {"tokenizer_workdir": "tok"}

    def __len__(self):
        return 0


def _judge(workdir, monkeypatch, scores):
    config = ml_collections.ConfigDict(
        {
            "eval": {"curve_per_task": 2},
            "data": {"eval_split": "validation"},
            "sampling": {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 1.0},
        }
    )
    monkeypatch.setattr(generator, "open_split", lambda data, split: [])
    monkeypatch.setattr(generator, "curve_records", lambda split, n: {"write": []})
    monkeypatch.setattr(generator, "judge_curve_sample", lambda *a, **k: dict(scores))
    judge = generator.SampleJudge(None, config, _Source(), None, workdir)
    monkeypatch.setattr(judge, "_run", lambda params: None)
    return judge


def test_curve_points_are_appended_with_training_minutes(tmp_path, monkeypatch):
    judge = _judge(tmp_path, monkeypatch, {"single_object": 0.25, "write": 0.0})
    first = judge.curve_point({}, step=100, train_minutes=10.004)
    judge.curve_point({}, step=200, train_minutes=20.0)
    assert first == {"curve_train_minutes": 10.0, "curve_single_object": 0.25, "curve_write": 0.0}
    lines = [json.loads(x) for x in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [(x["step"], x["train_minutes"]) for x in lines] == [(100, 10.0), (200, 20.0)]
    assert lines[0]["single_object"] == 0.25

    resumed = _judge(tmp_path, monkeypatch, {"single_object": 0.5})
    resumed.curve_point({}, step=250, train_minutes=5.0)  # 5 minutes into the new process
    last = json.loads((tmp_path / "curve.jsonl").read_text().splitlines()[-1])
    assert (last["step"], last["train_minutes"]) == (250, 25.0)


def test_no_curve_without_a_sample_size(tmp_path, monkeypatch):
    judge = _judge(tmp_path, monkeypatch, {"compose": 1.0})
    judge.config.eval.curve_per_task = 0
    assert judge.curve_point({}, step=1, train_minutes=1.0) == {}
    assert not (tmp_path / "curve.jsonl").exists()
