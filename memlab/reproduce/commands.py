"""`memlab reproduce CLAIM|all`: run registered claims and write their verdicts (see memlab.reproduce)."""

from __future__ import annotations

import argparse
from pathlib import Path

LAUNCHERS = ("local", "slurm", "submitit-local")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run a registered claim (or all) and write its table and verdict")
    p.add_argument("claim", nargs="?", help="claim name, or `all`; --list shows them")
    p.add_argument("--out", default="results", help="results directory: <claim>.md, <claim>.json, figures")
    p.add_argument("--workdir", default="runs/reproduce", help="runs go under WORKDIR/<claim>/<sweep>/")
    p.add_argument("--scale", choices=("cpu", "paper"), default="cpu", help="cpu: minutes on a laptop")
    p.add_argument("--dry-run", action="store_true", help="validate every stage's configs, print the plan, run nothing")
    p.add_argument("--device", default="h100", help="accelerator the plan's device-hours are for (hardware table)")
    p.add_argument("--mfu", type=float, default=0.3, help="model FLOPs utilisation the plan's device-hours assume")
    p.add_argument("--parallel", type=int, default=1, help="local launcher: runs at a time")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local")
    p.add_argument("--timeout-min", type=int, default=60, help="SLURM / submitit: time limit per run")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--list", action="store_true", help="list the registered claims and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from memlab.errors import ConfigError
    from memlab.reproduce.plan import check_device, make_plan, print_plan
    from memlab.reproduce.readme import update_repository_readme
    from memlab.reproduce.run import claim_names, get_claim, reproduce, study_of

    if args.list:
        for name in claim_names():
            claim = get_claim(name)
            print(f"{name:22s} {claim.title} ({claim.source})")
        return 0
    if not args.claim:
        raise ConfigError(f"name a claim or `all`; registered: {', '.join(claim_names())}")
    names = claim_names() if args.claim == "all" else [args.claim]
    for name in names:
        get_claim(name)  # an unknown name fails before anything runs
    check_device(args.device, args.mfu)
    if args.dry_run:  # built under a scratch directory: a plan writes nothing anywhere
        with tempfile.TemporaryDirectory(prefix="memlab-plan-") as scratch:
            plans = [make_plan(c, study_of(c, args.scale, Path(scratch)), device=args.device, mfu=args.mfu)
                     for c in map(get_claim, names)]  # fmt: skip
        for name, plan in zip(names, plans, strict=True):
            print_plan(get_claim(name), plan)
        if len(plans) > 1:
            runs, flops, hours = (sum(getattr(p.at_most, k) for p in plans) for k in ("runs", "flops", "hours"))
            print(f"memlab: all {len(plans)} claims at {args.scale} scale: at most {runs} runs, {flops:.3g} training "
                  f"FLOPs, {hours:.3g} {args.device}-hours at MFU {args.mfu:g}")  # fmt: skip
        return 0
    verdicts = []
    for name in names:
        result = reproduce(
            name,
            out=Path(args.out),
            workdir=Path(args.workdir),
            scale=args.scale,
            device=args.device,
            mfu=args.mfu,
            parallel=args.parallel,
            launcher=args.launcher,
            timeout_min=args.timeout_min,
            partition=args.partition,
            gpus_per_node=args.gpus_per_node,
        )
        verdicts.append(result.verdict_line())
    if update_repository_readme(args.out):
        print("memlab: updated the claims table in README.md")
    if len(verdicts) > 1:
        print("\n".join(["memlab: verdicts:", *verdicts]))
    return 0
