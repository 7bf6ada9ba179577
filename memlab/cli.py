"""The `memlab` command. Subcommands parse arguments and call the library; errors a user can fix print one line."""

from __future__ import annotations

import argparse
import logging
import sys


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("memlab").setLevel(logging.INFO)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING if not verbose else absl.logging.INFO)
    except ImportError:
        pass


def cmd_train(args) -> int:
    from memlab.config import load_config
    from memlab.train.loop import Interrupted, NonFiniteError, train

    config = load_config(args.config, args.set)
    try:
        summary = train(config, args.workdir)
    except NonFiniteError as err:
        print(f"memlab: training stopped: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"memlab: {err}", file=sys.stderr)
        return 130
    shown = {k: summary.get(k) for k in ("step", "eval/loss", "eval/accuracy", "wall_seconds") if k in summary}
    print(f"memlab: {summary['status']} {args.workdir} " + " ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
    return 0


def cmd_report(args) -> int:
    from memlab.analysis import write_report

    path = write_report(args.dir, metric=args.metric)
    print(f"memlab: wrote {path}")
    return 0


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memlab", description="Scaling-law experiments on memory architectures.")
    parser.add_argument("-v", "--verbose", action="store_true", help="library INFO logs (orbax, absl)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run (resumes if the workdir has checkpoints)")
    p.add_argument("config", help="experiment file defining get_config(), e.g. experiments/mqar.py")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.d_model=64 (repeatable)")
    p.add_argument("--workdir", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/ ...)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="write report.md and plots for a directory of runs")
    p.add_argument("dir")
    p.add_argument("--metric", default=None, help="main metric (default: eval/accuracy when present, else eval/loss)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    from memlab.config import ConfigError

    try:
        return args.func(args)
    except ConfigError as err:
        print(f"memlab: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"memlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
