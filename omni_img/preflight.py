"""Checks, before any work starts, that the system tools a command will need are here.

A job that finds a missing tool only when it reaches the stage that uses it has already
spent its earlier stages for nothing (the main job's tokenizer trains for minutes before
its evaluation reads words with OCR). Commands therefore name the tools their whole run
needs up front, and `require` stops them at once with the command that installs each
missing one.

This module depends on nothing in the package but `errors`, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

from omni_img.errors import UserError


@dataclasses.dataclass(frozen=True)
class Tool:
    """A program found on PATH (or at the path an environment variable names)."""

    command: str
    purpose: str  # what the project uses it for, shown when it is missing
    debian_packages: str
    homebrew_package: str
    path_variable: str = ""  # an environment variable that may name the executable

    def find(self) -> str | None:
        """The executable's path, or None."""
        named = os.environ.get(self.path_variable) if self.path_variable else None
        if named:
            return named if os.access(named, os.X_OK) else None
        return shutil.which(self.command)

    def install_hint(self) -> str:
        if sys.platform == "darwin":
            return f"brew install {self.homebrew_package}"
        return f"apt-get install {self.debian_packages} (or: bash launch/system_tools.sh)"


TESSERACT = Tool(
    command="tesseract",
    purpose="the judge reads the words of write scenes with OCR",
    debian_packages="tesseract-ocr tesseract-ocr-eng",
    homebrew_package="tesseract",
    path_variable="OMNI_IMG_TESSERACT",
)


def missing(tools: tuple[Tool, ...]) -> list[Tool]:
    """The tools of `tools` that cannot be found."""
    return [tool for tool in tools if tool.find() is None]


def require(tools: tuple[Tool, ...], what: str) -> None:
    """UserError (one line) naming every missing tool, why `what` needs it and its install."""
    absent = missing(tools)
    if absent:
        parts = "; ".join(
            f"{tool.command} ({tool.purpose}): install with {tool.install_hint()}"
            for tool in absent
        )
        raise UserError(f"{what} needs tools that are not installed, nothing was started: {parts}")
