"""The command-line options of C2PA signing, shared by `generate` and `serve`."""

from __future__ import annotations

import argparse


def add_signing_arguments(parser: argparse.ArgumentParser, prompt_help: str) -> None:
    """--c2pa_cert, --c2pa_key and --no_prompt_in_provenance (`prompt_help` says where)."""
    parser.add_argument("--c2pa_cert", help="PEM certificate chain (signer first) for C2PA")
    parser.add_argument("--c2pa_key", help="PEM private key of --c2pa_cert")
    parser.add_argument("--no_prompt_in_provenance", action="store_true", help=prompt_help)
