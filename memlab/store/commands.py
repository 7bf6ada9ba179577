"""`memlab store-capacity --out DIR`: recall accuracy of delta vs Hebbian writes against stored pairs per
key dimension, written as capacity.md, capacity.csv and capacity.png."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from memlab.errors import ConfigError

if TYPE_CHECKING:  # the study imports jax; the CLI imports it only when the command runs
    from .capacity import Study


def register(sub) -> None:
    from .capacity import Study

    d = Study()
    join = lambda values: ",".join(f"{v:g}" for v in values)
    p = sub.add_parser(
        "store-capacity",
        help="capacity of the associative store: delta vs Hebbian writes, "
        "random and correlated keys, one and several passes",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dims", default=join(d.dims), help=f"key = value dimensions d (default {join(d.dims)})")
    p.add_argument(
        "--ratios", default=join(d.ratios), help=f"stored pairs per dimension N/d (default {join(d.ratios)})"
    )
    p.add_argument("--passes", default=join(d.passes), help=f"write passes over the pairs (default {join(d.passes)})")
    p.add_argument("--rules", default=",".join(d.rules), help=f"default {','.join(d.rules)}")
    p.add_argument("--keys", default=",".join(d.keys), help=f"key kinds (default {','.join(d.keys)})")
    p.add_argument("--trials", type=int, default=d.trials, help=f"independent draws per point (default {d.trials})")
    p.add_argument("--beta", type=float, default=d.beta, help=f"write strength in (0, 1] (default {d.beta:g})")
    p.add_argument("--rho", type=float, default=d.rho, help=f"mean cosine of correlated keys (default {d.rho:g})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=run)


def _items(flag: str, text: str, kind, accepted=None) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    ok = values and all((v in accepted) if accepted else v > 0 for v in values)
    if not ok:
        want = f"a comma list of {', '.join(accepted)}" if accepted else f"a comma list of positive {kind.__name__}s"
        raise ConfigError(f"--{flag}={text!r}: expected {want}")
    return values


def study_from_args(args: argparse.Namespace) -> Study:
    from .capacity import KEY_KINDS, Study
    from .rules import RULES

    if not 0 < args.beta <= 1:
        raise ConfigError(f"--beta={args.beta}: expected a write strength in (0, 1]")
    if not 0 <= args.rho < 1:
        raise ConfigError(f"--rho={args.rho}: expected a mean key cosine in [0, 1)")
    if args.trials < 1:
        raise ConfigError(f"--trials={args.trials}: expected a positive integer")
    return Study(
        dims=_items("dims", args.dims, int),
        ratios=tuple(sorted(_items("ratios", args.ratios, float))),
        passes=_items("passes", args.passes, int),
        rules=_items("rules", args.rules, str, RULES),
        keys=_items("keys", args.keys, str, KEY_KINDS),
        trials=args.trials,
        beta=args.beta,
        rho=args.rho,
        seed=args.seed,
    )


def run(args) -> int:
    import time
    from pathlib import Path

    from . import capacity, capacity_report

    study = study_from_args(args)
    start = time.perf_counter()
    frame = capacity.run(study)
    path = capacity_report.write(Path(args.out), study, frame, time.perf_counter() - start)
    print(f"memlab: wrote {path}")
    print(path.read_text().split("![")[0].strip())
    return 0
