"""The docs quote benchmark figures only as the committed results files hold them."""

import json
import pathlib

import pytest

from benchmarks import docs_figures as df

ROOT = pathlib.Path(__file__).resolve().parents[1]
PERFORMANCE = ROOT / "docs" / "performance.md"


def test_performance_md_figures_equal_the_committed_results():
    text = PERFORMANCE.read_text()
    assert len(df.tagged_figures(text)) >= 50  # the doc is tagged, not emptied
    assert df.problems(text, doc="docs/performance.md") == []


@pytest.fixture
def results(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({
        "seconds": 568.86,
        "results": [
            {"case": "tokenizer", "devices": 8, "cached": True, "step_s": 0.31241},
            {"case": "tokenizer", "devices": 1, "cached": False, "step_s": 0.35994},
        ],
    }))  # fmt: skip
    return tmp_path


def _problems(text, results):
    return df.problems(text, results, doc="d.md")


def test_a_figure_matches_to_its_printed_precision_only(results):
    tag = "<!-- results: train.json#results[case=tokenizer,devices=8].step_s * 1000 -->"
    assert _problems(f"step 312{tag} ms", results) == []
    assert _problems(f"step 312.4{tag} ms", results) == []
    stale = _problems(f"step 401{tag} ms", results)
    assert len(stale) == 1 and stale[0].startswith("d.md:1: 401, but") and "is 312" in stale[0]
    assert len(_problems(f"step 312.5{tag} ms", results)) == 1


def test_the_file_directive_ratios_and_selectors(results):
    text = (
        "<!-- results file: train.json -->\n"
        "a 1.15<!-- results: results[devices=1].step_s / results[0].step_s -->× ratio,\n"
        "b 9.5<!-- results: seconds / 60 --> minutes, "
        "c 47.5<!-- results: results[cached=false].step_s - 0.3124 * 1000 --> ms\n"
    )
    assert _problems(text, results) == []


def test_unresolvable_markers_are_named_not_raised(results):
    text = (
        "1<!-- results: train.json#results[case=rolling].step_s --> s, "
        "2<!-- results: train.json#results[case=tokenizer].step_s --> s, "
        "3<!-- results: missing.json#seconds --> s, "
        "4<!-- results: train.json#results[0].case --> s, "
        "5<!-- results: seconds --> s"
    )
    found = _problems(text, results)
    assert len(found) == 5
    assert "matches 0 elements" in found[0] and "matches 2 elements" in found[1]
    assert "no results file missing.json" in found[2] and "not a number" in found[3]
    assert "names no results file" in found[4]


def test_a_figure_with_a_unit_and_no_marker_is_untagged(results):
    text = "ours 4.86 s, a goal of 5<!-- unchecked: the goal --> %, batch 32\n```\n9 ms\n```\n"
    assert _problems(text, results) == ["d.md:1: untagged figure '4.86 s'"]


def test_write_rewrites_tagged_figures_at_their_precision(results):
    text = (
        "<!-- results file: train.json -->\n"
        "401<!-- results: results[devices=8].step_s * 1000 --> ms and "
        "0.4<!-- results: results[devices=1].step_s --> s; 1,000<!-- results: seconds * 10 -->"
    )
    new = df.rewritten(text, results)
    assert new.splitlines()[1] == (
        "312<!-- results: results[devices=8].step_s * 1000 --> ms and "
        "0.4<!-- results: results[devices=1].step_s --> s; 5,689<!-- results: seconds * 10 -->"
    )
    assert _problems(new, results) == []


def test_the_main_job_report_quotes_the_quality_recipes_figure():
    """The report's pointer to docs/models.md quotes models.md's own single-object figure
    of the quality recipe."""
    models = (ROOT / "docs" / "models.md").read_text()
    row = next(line for line in models.splitlines() if line.startswith("| single object (GenEval"))
    figure = row.split("**")[1]  # the bold conv decoder figure, e.g. "36 %"
    report = (ROOT / "docs" / "main_job_report.md").read_text()
    pointer = next(line for line in report.splitlines() if "quality recipe reaches" in line)
    assert f"single object {figure}" in pointer, pointer


def test_the_readme_quotes_the_rolling_decoders_measured_psnr_difference():
    """README's rolling decoder row says what the main job measured, not that it refines."""
    report = (ROOT / "docs" / "main_job_report.md").read_text()
    difference = float(report.split("rolling - conv = ")[1].split(" dB")[0])
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| rolling decoder"))
    assert "refine" not in row
    assert f"{abs(difference):.2f} dB {'below' if difference < 0 else 'above'}" in row, row
