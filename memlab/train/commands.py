"""`memlab train CONFIG --set k=v ... --workdir DIR`."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes if the workdir has checkpoints)")
    p.add_argument("config", help="experiment file defining get_config(), e.g. experiments/mqar.py")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.d_model=64 (repeatable)")
    p.add_argument("--workdir", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/ ...)")
    p.set_defaults(func=run)


def run(args) -> int:
    from memlab.config import load_config
    from memlab.train.loop import Interrupted, NonFiniteError, train

    from memlab.parallel import maybe_initialize_distributed

    config = load_config(args.config, args.set)
    maybe_initialize_distributed(config.mesh)
    try:
        summary = train(config, args.workdir)
    except NonFiniteError as err:
        print(f"memlab: training stopped: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"memlab: {err}", file=sys.stderr)
        return 130
    shown = {k: summary[k] for k in ("step", "eval/loss", "eval/accuracy", "eval/bits_per_byte", "wall_seconds") if k in summary}
    print(f"memlab: {summary['status']} {args.workdir} "
          + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return 0
