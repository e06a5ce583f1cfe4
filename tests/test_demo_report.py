"""The main job's report: what it prints from the judge's summaries."""

from omni_img.demo import judge_lines


def test_report_lines_say_how_many_write_images_ocr_read():
    summary = {
        "compose_attributes": {"shape": 0.5},
        "compose_by_count": {"1 objects": {"n": 4, "accuracy": 0.25}},
        "write_ocr": {"read": 3, "of": 4, "exact_match": 1 / 3, "cer": 0.25},
        "write_by_words": {
            "held_out_words": {"read": 0, "of": 2, "exact_match": None, "cer": None},
        },
        "edit_ops": {"move": 0.0},
    }
    assert judge_lines(summary) == [
        "compose attributes: shape 50 %",
        "compose by object count: 1 objects 25 % (n=4)",
        "write: exact 33 %, CER 0.25 (OCR read 3 of 4; the rest failed before OCR)",
        "write, held out words: no image reached OCR (background or sign wrong in all 2)",
        "edit by op: move 0 %",
    ]
