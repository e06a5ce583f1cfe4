"""The `omni-img` console command.

Each subcommand lives beside the library code it drives, in a module that
exposes `add_arguments(parser)` and `main(args) -> int`. Those modules keep their
heavy imports (jax, tfds) inside `main`, so `omni-img --help` stays fast. The
library never imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from omni_img.errors import UserError

# subcommand -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("omni_img.demo", "the main job: build data, train every stage, export, report"),
    "data": ("omni_img.data.commands", "build omni_shapes; ingest or convert your own images"),
    "train": ("omni_img.trainers.commands", "train one stage from an experiment config"),
    "compile": (
        "omni_img.trainers.compile",
        "compile a train step ahead of time: memory, FLOPs, collectives",
    ),
    "tokenize": ("omni_img.trainers.tokenize", "write the token grids of dataset splits once"),
    "eval": ("omni_img.evals.commands", "FID, CLIP score and image reports; fetch eval weights"),
    "export": ("omni_img.export.commands", "write an inference bundle from a trained run"),
    "generate": ("omni_img.export.generate", "prompt (+ image, + session) -> PNG from a bundle"),
    "serve": ("omni_img.serve.commands", "serve a bundle over HTTP: API, streaming, web page"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with `command` named only that subcommand's arguments: every
    subcommand is listed either way, but only the named one's module is imported (each
    module costs its imports; `omni-img generate` should not pay for the trainers')."""
    parser = argparse.ArgumentParser(prog="omni-img", description=__doc__.splitlines()[0])
    from omni_img import __version__

    parser.add_argument("--version", action="version", version=f"omni-img {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if command is not None and name != command:
            continue  # listed in --help, never parsed in this process
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
        sub.set_defaults(
            _run=module.main,
            _accepts_overrides=getattr(module, "ACCEPTS_CONFIG_OVERRIDES", False),
        )
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand argv names first (None: none, or an option comes before it)."""
    if argv and argv[0] in COMMANDS:
        return argv[0]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_command(argv))
    args, extra = parser.parse_known_args(argv)
    # Commands that take `--config.key=value` overrides receive the unparsed rest.
    if getattr(args, "_accepts_overrides", False):
        args.overrides = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._run(args) or 0)
    except UserError as error:
        print(f"omni-img {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"omni-img {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
