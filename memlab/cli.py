"""The `memlab` command. Each area registers its subcommands (`register(subparsers)` in its `commands`
module); errors a user can fix (`memlab.errors.MemlabError`) print one line and exit 2 (see `memlab.entry`)."""

from __future__ import annotations

import sys

from memlab.entry import run

COMMAND_MODULES = (
    "memlab.train.commands",  # train, generate, params save/load
    "memlab.analysis.commands",  # report
    "memlab.data.commands",  # data prepare, data verify, data facts
    "memlab.sweep.commands",  # sweep, sweep-point, agent, status
    "memlab.studies.slot_memory.commands",  # efficiency, slots
    "memlab.store.commands",  # store-capacity
    "memlab.reproduce.commands",  # reproduce
    "memlab.probes.commands",  # probe-memory
    "memlab.slow_weights.commands",  # write, query
)


def main(argv: list[str] | None = None) -> int:
    """`memlab <argv>` (the console script); the exit code."""
    return run(argv, COMMAND_MODULES)


if __name__ == "__main__":
    sys.exit(main())
