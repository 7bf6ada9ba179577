"""`memlab report DIR`: report.md and plots for a directory of runs."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write report.md and plots for a directory of runs")
    p.add_argument("dir")
    p.add_argument("--metric", default=None, help="main metric (default: eval/accuracy when present, else eval/loss)")
    p.set_defaults(func=run)


def run(args) -> int:
    from memlab.analysis import write_report

    path = write_report(args.dir, metric=args.metric)
    print(f"memlab: wrote {path}")
    return 0
