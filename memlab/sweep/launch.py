"""Launch a sweep's points as `memlab train` runs under DIR/<run name>/: locally (sequential or N processes)
or as a SLURM job array through submitit. Relaunching is idempotent: completed runs are skipped, the others
resume from their checkpoints (that is what `memlab train` does on an existing workdir)."""

from __future__ import annotations

import datetime
import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlab import entry
from memlab.sweep.progress import SweepProgress
from memlab.sweep.spec import Point, Sweep, describe, expand
from memlab.train.run_dir import read_json, write_json

if TYPE_CHECKING:
    import submitit


def new_launch_id() -> str:
    """A fresh id per launch (time, then random), so relaunches of one sweep can be told apart."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def run_status(run_dir: Path) -> str:
    """The run's status in its summary.json; `pending` before it has written one."""
    summary = run_dir / "summary.json"
    return read_json(summary).get("status", "pending") if summary.exists() else "pending"


def train_argv(point: Point, run_dir: Path) -> list[str]:
    """The `memlab train` command line of a point: values as Python literals so they parse back exactly."""
    sets = [f"{key}={value!r}" for key, value in point.overrides.items()]
    for key in ("logging.sweep_id", "logging.launch_id", "logging.run_name", "logging.group"):
        sets.append(f"{key}={point.config.logging[key.split('.')[1]]!r}")
    return ["train", point.experiment, *[a for s in sets for a in ("--set", s)], "--workdir", str(run_dir)]


TRAIN_COMMANDS = ("memlab.train.commands",)


def train_here(argv: list[str]) -> int:
    """Run `memlab <argv>` (a `train_argv`) in this process, as the CLI would: logging set up, a user-fixable
    error as one line and exit 2. Only the train commands are registered: the sweep never imports `memlab.cli`,
    whose registry imports the sweep's own commands."""
    return entry.run(argv, TRAIN_COMMANDS)


def run_job(argv: list[str]) -> int:
    """Entry point of one submitit job (pickled by reference): a run that fails raises, so the job reports it."""
    code = train_here(argv)
    if code != 0:
        raise RuntimeError(f"memlab {' '.join(argv[:2])} ... exited with {code}")
    return code


def record(sweep: Sweep, points: list[Point], workdir: Path, launch_id: str) -> None:
    """Write DIR/sweep.json (latest launch, plus the history of launch ids)."""
    path = workdir / "sweep.json"
    launches = read_json(path).get("launches", []) if path.exists() else []
    write_json(path, {**describe(sweep, points, launch_id), "launches": [*launches, launch_id]})


def plan(sweep: Sweep, workdir: Path, launch_id: str) -> tuple[list[Point], list[Point]]:
    """(points to run, points already completed)."""
    points = expand(sweep, launch_id=launch_id)
    todo = [p for p in points if run_status(workdir / p.name) != "completed"]
    done = [p for p in points if p not in todo]
    return todo, done


def run_points(
    sweep: Sweep,
    todo: list[Point],
    done: list[Point],
    workdir: Path,
    launch_id: str,
    *,
    launcher: str = "local",
    parallel: int = 1,
    timeout_min: int = 60,
    partition: str | None = None,
    gpus_per_node: int | None = None,
    array_parallelism: int | None = None,
    wait: bool = False,
) -> list[str]:
    """Record the launch and run `todo` (the output of `plan`) with a launcher: local, slurm or submitit-local.
    Returns the names of the runs that failed. SLURM jobs are left running unless `wait` (then their failures
    count too), since `memlab sweep` hands a cluster its array and returns."""
    workdir.mkdir(parents=True, exist_ok=True)
    record(sweep, todo + done, workdir, launch_id)
    print(f"memlab: sweep {sweep.name}: {len(todo)} to run, {len(done)} already completed (launch {launch_id})")
    if not todo:
        return []
    if launcher == "local":
        codes = launch_local(todo, workdir, parallel=parallel, title=f"sweep {sweep.name}")
        return [name for name, code in codes.items() if code != 0]
    if launcher not in ("slurm", "submitit-local"):
        raise ValueError(f"launcher {launcher!r}: expected local, slurm or submitit-local")
    cluster = "local" if launcher == "submitit-local" else "slurm"
    params: dict[str, Any] = {"timeout_min": timeout_min}
    if cluster == "slurm":
        slurm = {"slurm_partition": partition, "gpus_per_node": gpus_per_node}
        slurm["slurm_array_parallelism"] = array_parallelism
        params.update({k: v for k, v in slurm.items() if v is not None})
    jobs = launch_submitit(todo, workdir, cluster=cluster, **params)
    print(
        f"memlab: submitted {len(jobs)} jobs ({jobs[0].job_id.split('_')[0]}); `memlab status {workdir}` shows progress"
    )
    if cluster == "local" or wait:
        return [p.name for p, job in zip(todo, jobs, strict=True) if job.exception() is not None]
    return []


def launch_local(points: list[Point], workdir: Path, *, parallel: int = 1, title: str = "sweep") -> dict[str, int]:
    """Run points as subprocesses, `parallel` at a time, showing their progress (memlab.sweep.progress); each
    run's output goes to DIR/<run>/train.log. Returns each run's exit code."""

    def run_one(point: Point) -> tuple[str, int]:
        run_dir = workdir / point.name
        run_dir.mkdir(parents=True, exist_ok=True)
        progress.started(point.name)
        with (run_dir / "train.log").open("a") as log:
            code = subprocess.run(
                [sys.executable, "-m", "memlab.cli", *train_argv(point, run_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
            ).returncode
        progress.finished(point.name, code)
        return point.name, code

    steps = {p.name: p.config.train.steps for p in points}
    with SweepProgress(workdir, steps, title=title) as progress, ThreadPoolExecutor(max(1, parallel)) as pool:
        return dict(pool.map(run_one, points))


def launch_submitit(
    points: list[Point], workdir: Path, *, cluster: str | None = None, **parameters: Any
) -> list[submitit.Job]:
    """Submit the points as one job array (SLURM through submitit; cluster='local' runs them on this machine).

    `parameters` go to `executor.update_parameters` (e.g. timeout_min, slurm_partition, gpus_per_node,
    slurm_array_parallelism). Returns the submitit jobs.
    """
    import submitit

    executor = submitit.AutoExecutor(folder=workdir / ".submitit" / "%j", cluster=cluster)
    executor.update_parameters(**{"timeout_min": 60, **parameters})
    argvs = [train_argv(p, workdir / p.name) for p in points]
    return executor.map_array(run_job, argvs)


def _child_env() -> dict:
    """A run's environment: unbuffered output, and rich told its train.log is no terminal (FORCE_COLOR would
    otherwise have each run draw a live bar into its log): it prints a plain line now and then instead."""
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(TTY_COMPATIBLE="0", TTY_INTERACTIVE="0")
    return env
