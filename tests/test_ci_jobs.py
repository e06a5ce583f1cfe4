"""The CI jobs: between them they run every test, the slow ones included, and the docs
that quote slow tests' figures name the job that runs them."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest
from _pytest.mark.expression import Expression

ROOT = pathlib.Path(__file__).resolve().parents[1]
JOBS = ("run", "slow")
MARKERS = ("slow", "torch")


def _marker_expression(job: str) -> str:
    """The -m expression of the job's pytest command ("" when it selects everything)."""
    text = (ROOT / ".ci" / job).read_text()
    commands = [line for line in text.splitlines() if "-m pytest" in line]
    assert len(commands) == 1, f".ci/{job} runs pytest {len(commands)} times"
    found = re.search(r'-m pytest .*?-m (?:"([^"]+)"|(\S+))', commands[0])
    return (found[1] or found[2]) if found else ""


def _selects(expression: str, markers: set) -> bool:
    return not expression or Expression.compile(expression).evaluate(lambda m: m in markers)


@pytest.mark.parametrize(
    "markers",
    [set(), {"slow"}, {"torch"}, {"slow", "torch"}, {"chaos"}, {"chaos", "slow"}],
    ids=["plain", "slow", "torch", "both", "chaos", "chaos-slow"],
)
def test_every_kind_of_test_runs_in_some_ci_job(markers):
    assert all((ROOT / ".ci" / job).is_file() for job in JOBS), "a CI job script is missing"
    assert any(_selects(_marker_expression(job), markers) for job in JOBS), markers


def test_heavy_chaos_tests_stay_out_of_the_default_job():
    assert not _selects(_marker_expression("run"), {"chaos", "slow"})
    assert _selects(_marker_expression("run"), {"chaos"})  # the fast subset runs in CI


def test_the_slow_job_runs_exactly_the_slow_tests():
    expression = _marker_expression("slow")
    assert _selects(expression, {"slow"}) and _selects(expression, {"slow", "torch"})
    assert not _selects(expression, set()) and not _selects(expression, {"torch"})
    assert os.access(ROOT / ".ci" / "slow", os.X_OK)


@pytest.mark.parametrize("doc", ["README.md", "docs/performance.md", "docs/eval.md"])
def test_docs_quoting_slow_tests_name_the_slow_job(doc):
    assert "`.ci/slow`" in (ROOT / doc).read_text() or "bash .ci/slow" in (ROOT / doc).read_text()


@pytest.mark.parametrize("job", [*JOBS, "setup"])
def test_ci_scripts_pass_shellcheck(job):
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; .ci/run does it)")
    result = subprocess.run(
        ["shellcheck", "-x", "--shell=bash", f".ci/{job}"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout
