"""A small filesystem the test mounts itself (tmpfs), to fill up or make read-only.

Mounting needs root (CI runs as root) or an unprivileged user namespace; where neither
works the tests that need it are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import threading
import time

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def small_tmpfs(path: pathlib.Path, size_bytes: int):
    """A tmpfs of `size_bytes` mounted at `path` for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path))
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        _mount("-o", "remount,rw", str(path))
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_view(folder: pathlib.Path, view: pathlib.Path):
    """`folder`'s files, read-only, at `view` (a bind mount: files still open for
    writing elsewhere do not keep it from going read-only)."""
    view.mkdir(parents=True, exist_ok=True)
    for args in (("--bind", str(folder), str(view)), ("-o", "remount,bind,ro", str(view))):
        result = _mount(*args)
        assert result.returncode == 0, result.stderr
    try:
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def fill_when_present(marker: pathlib.Path, folder: pathlib.Path, free_bytes: int):
    """Start a thread that fills `folder`'s filesystem (see `fill_leaving`) the moment
    `marker` exists; returns the thread (its `.filler` is the file, once written)."""

    def watch():
        while not marker.exists():
            if stop.is_set():
                return
            time.sleep(0.002)
        thread.filler = fill_leaving(folder, free_bytes)

    stop = threading.Event()
    thread = threading.Thread(target=watch, daemon=True)
    thread.filler, thread.stop = None, stop
    thread.start()
    return thread


def fill_leaving(folder: pathlib.Path, free_bytes: int) -> pathlib.Path:
    """Write a file that leaves about `free_bytes` free on the filesystem of `folder`."""
    stats = os.statvfs(folder)
    available = stats.f_bavail * stats.f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        f.write(bytes(max(0, available - free_bytes)))
    return filler
