"""`memlab report DIR`: report.md and plots for a directory of runs."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write report.md and plots for a directory of runs")
    p.add_argument("dir")
    p.add_argument("--metric", default=None, help="main metric (default: eval/accuracy when present, else eval/loss)")
    p.add_argument(
        "--size",
        default="params_non_embedding",
        choices=["params_non_embedding", "params"],
        help="model size N of the laws: non-embedding parameters (default, as in the literature) or all",
    )
    p.add_argument(
        "--fit-accuracy",
        action="store_true",
        help="also fit accuracy-type metrics with a loss law (by default they are plotted, not fitted)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from memlab.analysis import write_report

    path = write_report(args.dir, metric=args.metric, size=args.size, fit_accuracy=args.fit_accuracy)
    print(f"memlab: wrote {path}")
    return 0
