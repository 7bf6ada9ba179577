"""How a memlab command runs: parse its arguments, set up logging, print a user-fixable error as one line.

`memlab.cli` runs every command through `run` with the full list of command modules. A sweep job that trains a
point in its own process (submitit, `memlab sweep-point`) runs `memlab train` through `run` with the train
commands only, so the sweep never imports `memlab.cli`, which registers the sweep's own commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from memlab.errors import MemlabError


def setup_logging(verbose: bool) -> None:
    """memlab's own INFO lines (e.g. `resuming ... from step N`) always; the libraries' only with -v."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # an imported library may have configured the root logger already
    )
    logging.getLogger("memlab").setLevel(logging.INFO)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.INFO if verbose else absl.logging.WARNING)
    except ImportError:
        pass


def build_parser(modules: Sequence[str]) -> argparse.ArgumentParser:
    """The `memlab` parser with the subcommands that each module registers (`register(subparsers)`)."""
    parser = argparse.ArgumentParser(prog="memlab", description="Scaling-law experiments on memory architectures.")
    parser.add_argument("-v", "--verbose", action="store_true", help="library INFO logs (orbax, absl)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def run(argv: Sequence[str] | None, modules: Sequence[str]) -> int:
    """Run `memlab <argv>`; its exit code. A `MemlabError` or missing file prints one line (no traceback), exit 2."""
    args = build_parser(modules).parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except (MemlabError, FileNotFoundError) as err:
        print(f"memlab: error: {err}", file=sys.stderr)
        return 2
