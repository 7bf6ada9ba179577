"""`memlab sweep`, `memlab sweep-point`, `memlab agent`, `memlab status`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memlab.sweep.spec import Point, Sweep

LAUNCHERS = ("local", "slurm", "submitit-local", "wandb")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sweep commands to the `memlab` parser (see memlab.cli)."""
    p = sub.add_parser("sweep", help="expand a sweep file and run its points (idempotent)")
    p.add_argument("file", help="sweep file defining get_sweep(), e.g. sweeps/quickstart.py")
    p.add_argument("--workdir", help="sweep directory (default runs/<sweep name>)")
    p.add_argument("--dry-run", action="store_true", help="print the points with parameters and FLOPs; run nothing")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local")
    p.add_argument("--parallel", type=int, default=1, help="local launcher: runs at a time")
    p.add_argument("--report", action="store_true", help="write the report when the runs are done")
    p.add_argument("--wandb-export", metavar="PATH", help="write the W&B sweep config as JSON and stop")
    p.add_argument("--project", default=None, help="W&B project (default: the config's logging.project)")
    p.add_argument("--entity", default=None)
    p.add_argument("--timeout-min", type=int, default=60, help="SLURM: time limit per run")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--array-parallelism", type=int, default=None, help="SLURM: array jobs running at once")
    p.set_defaults(func=run_sweep)

    p = sub.add_parser("sweep-point", help="train one point of a sweep by name (used by W&B agents)")
    p.add_argument("file")
    p.add_argument("--workdir", required=True)
    p.add_argument("--point", required=True)
    p.set_defaults(func=run_point)

    p = sub.add_parser("agent", help="run points handed out by a W&B sweep")
    p.add_argument("sweep_id")
    p.add_argument("--project", default=None)
    p.add_argument("--entity", default=None)
    p.add_argument("--count", type=int, default=None)
    p.set_defaults(func=run_agent)

    p = sub.add_parser("status", help="table of the runs in a sweep directory")
    p.add_argument("dir")
    p.set_defaults(func=run_status)


def run_sweep(args: argparse.Namespace) -> int:
    """`memlab sweep`: run the points not completed yet; exit 1 when any run failed."""
    from memlab.sweep import launch
    from memlab.sweep.spec import load_sweep

    sweep = load_sweep(args.file)
    workdir = Path(args.workdir or Path("runs") / sweep.name)
    launch_id = launch.new_launch_id()
    todo, done = launch.plan(sweep, workdir, launch_id)
    if args.dry_run:
        _print_dry_run(todo + done, done)
        return 0
    if args.wandb_export or args.launcher == "wandb":
        return _wandb(sweep, todo + done, workdir, args)
    failed = launch.run_points(
        sweep,
        todo,
        done,
        workdir,
        launch_id,
        launcher=args.launcher,
        parallel=args.parallel,
        timeout_min=args.timeout_min,
        partition=args.partition,
        gpus_per_node=args.gpus_per_node,
        array_parallelism=args.array_parallelism,
    )
    if args.report:
        from memlab.analysis import write_report

        print(f"memlab: wrote {write_report(workdir)}")
    if failed:
        print(f"memlab: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _print_dry_run(points: list[Point], done: list[Point]) -> None:
    from rich.console import Console
    from rich.table import Table

    from memlab.sweep.estimate import estimate

    table = Table(title=f"{len(points)} points ({len(done)} already completed)")
    for column in ("run", "params", "non-emb params", "tokens", "train FLOPs", "state"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for p in points:
        e = estimate(p.config)
        table.add_row(
            p.name,
            f"{e['params']:,}",
            f"{e['params_non_embedding']:,}",
            f"{e['tokens']:.3g}",
            f"{e['flops']:.3g}",
            "completed" if p in done else "to run",
        )
    Console().print(table)


def _wandb(sweep: Sweep, points: list[Point], workdir: Path, args: argparse.Namespace) -> int:
    from memlab.sweep.wandb_sweep import create_wandb_sweep, wandb_sweep_config

    config = wandb_sweep_config(sweep, points, workdir)
    if args.wandb_export:
        Path(args.wandb_export).write_text(json.dumps(config, indent=2))
        print(f"memlab: wrote W&B sweep config with {len(points)} points to {args.wandb_export}")
        return 0
    project = args.project or points[0].config.logging.project
    sweep_id = create_wandb_sweep(config, project=project, entity=args.entity)
    print(f"memlab: created W&B sweep {sweep_id}; run agents with: memlab agent {sweep_id} --project {project}")
    return 0


def run_point(args: argparse.Namespace) -> int:
    """`memlab sweep-point`: train one named point in this process (what a W&B agent runs)."""
    from memlab.errors import ConfigError
    from memlab.sweep import launch
    from memlab.sweep.spec import expand, load_sweep

    sweep = load_sweep(args.file)
    workdir = Path(args.workdir)
    points = {p.name: p for p in expand(sweep, launch_id=launch.new_launch_id())}
    if args.point not in points:
        raise ConfigError(f"sweep {sweep.name!r} has no point {args.point!r}; points: {', '.join(points)}")
    if launch.run_status(workdir / args.point) == "completed":
        print(f"memlab: {args.point} already completed")
        return 0
    return launch.train_here(launch.train_argv(points[args.point], workdir / args.point))


def run_agent(args: argparse.Namespace) -> int:
    """`memlab agent`: a W&B agent; each point it is handed runs as `memlab sweep-point`."""
    from memlab.sweep.wandb_sweep import run_agent as agent

    agent(args.sweep_id, project=args.project, entity=args.entity, count=args.count)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """`memlab status`: the runs of a sweep directory, from their files (works while they run)."""
    from memlab.sweep.status import print_status

    if not Path(args.dir).is_dir():
        raise FileNotFoundError(f"no sweep directory {args.dir}")
    print_status(Path(args.dir))
    return 0
