"""Chained edit episodes: turn t's generated image is turn t+1's source, through Session."""

import numpy as np
import pytest

from omni_img.data import reading
from omni_img.evals.episodes import chained_episodes, judge_chained
from omni_img.models.generator import GeneratorConfig
from omni_img.sampling.session import Session
from omni_img.text.tokenizer import make_text_tokenizer
from omni_img.world.examples import example

GRID = (4, 4)


@pytest.fixture(scope="module")
def episodes():
    records = [example(0, "validation", index) for index in range(150)]
    found = chained_episodes(records, count=3, turns=3)
    assert len(found) == 3
    return found


def _sessions(count: int) -> list[Session]:
    cfg = GeneratorConfig(
        text_vocab_size=264, image_vocab_size=100, grid_h=GRID[0], grid_w=GRID[1],
        max_text_len=256, max_history_len=128,
    )  # fmt: skip
    start = np.zeros((1, *GRID), np.int32)
    return [Session.for_model(cfg, make_text_tokenizer("bytes"), start) for _ in range(count)]


def test_chained_episodes_are_whole_and_in_turn_order(episodes):
    for episode in episodes:
        assert [int(r["turn"]) for r in episode] == [1, 2, 3]
        assert len({int(r["episode"]) for r in episode}) == 1
        assert all(reading.text(r["task"]) == "edit" for r in episode)


def test_each_turn_is_conditioned_on_the_turn_before_it(episodes):
    """The fake generator writes tokens that name the call; the next turn must see them."""
    seen = []

    def run_turn(sessions, instructions):
        turn = len(sessions[0].turns)
        for i, (session, text) in enumerate(zip(sessions, instructions, strict=True)):
            cond = session.conditioning(text)
            seen.append((turn, i, cond["source_tokens"][0].copy(), cond["history_ids"].copy()))
            session.add_turn(text, np.full((1, *GRID), 10 * turn + i + 1, np.int32))
        return np.stack([np.asarray(e[turn]["image"], np.uint8) for e in episodes])

    judge_chained(episodes, _sessions(len(episodes)), run_turn)
    for turn, i, source, history in seen:
        expected = 0 if turn == 0 else 10 * (turn - 1) + i + 1  # the start, then the last output
        assert (source == expected).all(), (turn, i)
        assert bool(history.any()) == (turn > 0)  # earlier instructions ride along


def test_ground_truth_turns_pass_and_a_broken_turn_fails_its_episode(episodes):
    def truth(sessions, instructions, broken_turn=None):
        turn = len(sessions[0].turns)
        for session, text in zip(sessions, instructions, strict=True):
            session.add_turn(text, np.zeros((1, *GRID), np.int32))
        images = np.stack([np.asarray(e[turn]["image"], np.uint8) for e in episodes])
        return np.zeros_like(images) if turn == broken_turn else images

    report = judge_chained(episodes, _sessions(len(episodes)), truth)
    assert report["episode_accuracy"] == 1.0
    assert [t["accuracy"] for t in report["per_turn"]] == [1.0, 1.0, 1.0]

    broken = judge_chained(
        episodes, _sessions(len(episodes)), lambda s, i: truth(s, i, broken_turn=1)
    )
    assert [t["accuracy"] for t in broken["per_turn"]] == [1.0, 0.0, 1.0]
    assert [t["all_turns_so_far"] for t in broken["per_turn"]] == [1.0, 0.0, 0.0]
    assert broken["episode_accuracy"] == 0.0
