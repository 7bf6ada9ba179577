"""`memlab efficiency DIR` (slot vs baseline compute from run curves) and `memlab slots RUN` (what the slots
learn, from a trained slot-memory run)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "efficiency",
        help="slot memory vs baselines: compute to target accuracy, equal-compute "
        "accuracy, table and plots for a directory of context-QA runs",
    )
    p.add_argument("dir")
    p.add_argument("--target", type=float, default=0.9, help="value of --metric to reach (default 0.9)")
    p.add_argument("--metric", default="eval/exact_match", help="eval metric to reach (default: eval/exact_match)")
    p.add_argument("--at", default="512,32", help="L,k of the headline ratio (default 512,32)")
    p.set_defaults(func=run_efficiency)

    p = sub.add_parser("slots", help="what the slots of a trained slot_memory run attend to and how they cluster")
    p.add_argument("run_dir")
    p.add_argument("--examples", type=int, default=32, help="eval examples to probe (default 32)")
    p.add_argument("--out", default=None, help="output directory (default RUN_DIR/slots)")
    p.set_defaults(func=run_slots)


def run_efficiency(args) -> int:
    from memlab.studies.slot_memory.efficiency import write_efficiency_report

    try:
        length, k = (int(v) for v in args.at.split(","))
    except ValueError:
        from memlab.errors import ConfigError

        raise ConfigError(f"--at={args.at!r}: expected two integers L,k such as 512,32") from None
    path = write_efficiency_report(args.dir, target=args.target, metric=args.metric, headline=(length, k))
    print(f"memlab: wrote {path}")
    print(path.read_text().split("## Runs")[0].strip())
    return 0


def run_slots(args) -> int:
    from pathlib import Path

    from memlab.studies.slot_memory.slot_probe import probe_slots

    path = probe_slots(Path(args.run_dir), examples=args.examples, out=args.out)
    print(f"memlab: wrote {path}")
    print(path.read_text())
    return 0
