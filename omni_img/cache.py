"""Where omni_img keeps what it fetches or builds once per machine (weights, compiled code).

`$OMNI_IMG_CACHE` if set, else `$XDG_CACHE_HOME/omni_img`, else `~/.cache/omni_img`.
"""

from __future__ import annotations

import os


def cache_dir() -> str:
    """The cache's root directory (not created here)."""
    if os.environ.get("OMNI_IMG_CACHE"):
        return os.environ["OMNI_IMG_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "omni_img")
