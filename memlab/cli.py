"""The `memlab` command. Each area registers its subcommands (`register(subparsers)` in its `commands`
module); errors a user can fix (`memlab.errors.MemlabError`) print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from memlab.errors import MemlabError

COMMAND_MODULES = (
    "memlab.train.commands",      # train
    "memlab.analysis.commands",   # report
    "memlab.data.commands",       # data prepare, data verify
    "memlab.sweep.commands",      # sweep, sweep-point, agent, status
    "memlab.studies.slot_memory.commands",  # efficiency, slots
    "memlab.store.commands",      # store-capacity
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("memlab").setLevel(logging.INFO)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.INFO if verbose else absl.logging.WARNING)
    except ImportError:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memlab", description="Scaling-law experiments on memory architectures.")
    parser.add_argument("-v", "--verbose", action="store_true", help="library INFO logs (orbax, absl)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (MemlabError, FileNotFoundError) as err:
        print(f"memlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
