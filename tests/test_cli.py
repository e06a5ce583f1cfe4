"""The console command: `omni-img --help` lists every subcommand without importing JAX."""

import subprocess
import sys


def test_help_is_fast_and_lists_every_command():
    code = (
        "import sys; from omni_img.cli import COMMANDS, build_parser; "
        "text = build_parser().format_help(); "
        "missing = [c for c in COMMANDS if c not in text]; "
        "heavy = [m for m in ('jax', 'flax', 'tensorflow_datasets') if m in sys.modules]; "
        "print(missing, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []", out.stdout
