"""The benchmarks' check for other processes on the machine (benchmarks/common.py)."""

import os
import subprocess
import sys
import time

import pytest

from benchmarks.bench_llamagen import comparison_quiet, load_note
from benchmarks.common import OtherLoad, other_share


def test_other_share_is_the_busy_time_this_process_did_not_use():
    assert other_share(busy=10.0, total=20.0, own=10.0) == 0.0
    assert other_share(busy=15.0, total=20.0, own=5.0) == 0.5
    assert other_share(busy=4.9, total=20.0, own=5.0) == 0.0  # tick rounding: clipped
    assert other_share(busy=0.0, total=0.0, own=0.0) == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_process_beside_the_block_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past the interpreter's start
        with OtherLoad() as load:
            time.sleep(1.5)
    finally:
        spinner.kill()
        spinner.wait()
    # One spinning process takes a whole CPU: on 2 CPUs half the machine's time (less
    # where it has to share its CPU with other tests).
    assert load.share is not None and load.share > 0.6 / os.cpu_count(), load.share
    if os.cpu_count() <= 16:  # one CPU of 16 or fewer is past the quiet share
        assert load.quiet is False


def test_a_disturbed_comparison_is_marked():
    assert comparison_quiet({"omni_img": 0.01, "llamagen": 0.05})
    assert not comparison_quiet({"omni_img": 0.01, "llamagen": 0.3})
    assert comparison_quiet({"omni_img": None, "llamagen": None})  # nothing measured
    assert "NOT QUIET" in load_note({"omni_img": 0.2, "llamagen": 0.0})
    assert "NOT QUIET" not in load_note({"omni_img": 0.02, "llamagen": 0.0})
    assert load_note(None) == ""
