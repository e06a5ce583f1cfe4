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


def test_a_named_command_imports_only_its_own_module():
    code = (
        "import sys; from omni_img.cli import COMMANDS, build_parser; "
        "text = build_parser('generate').format_help(); "
        "missing = [c for c in COMMANDS if c not in text]; "
        "others = [m for c, (m, _) in COMMANDS.items() if c != 'generate' and m in sys.modules]; "
        "print(missing, others, 'omni_img.export.generate' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] [] True", out.stdout
