"""Run one claim end to end: its sweeps through the sweep launchers, then its evaluation and result files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from memlab.errors import ConfigError, RunFailedError
from memlab.registry import CLAIMS
from memlab.reproduce.claim import SCALES, Claim, Result
from memlab.sweep import Sweep, launch
from memlab.train.run_dir import read_json, write_json


def get_claim(name: str) -> Claim:
    """An instance of the registered claim `name` (a ConfigError lists the registered ones)."""
    import memlab.reproduce.claims  # noqa: F401  (registers the claims)

    return CLAIMS.get(name)()


def claim_names() -> list[str]:
    """Every registered claim, in registration order (the order of `memlab reproduce all`)."""
    import memlab.reproduce.claims  # noqa: F401

    return list(CLAIMS)


def reproduce(
    name: str,
    *,
    out: Path = Path("results"),
    workdir: Path = Path("runs/reproduce"),
    scale: str = "cpu",
    parallel: int = 1,
    launcher: str = "local",
    timeout_min: int = 60,
    partition: str | None = None,
    gpus_per_node: int | None = None,
) -> Result:
    """Run claim `name` at `scale`: train what its sweeps need under workdir/<claim>/<sweep>/ (completed runs are
    skipped, interrupted ones resume), evaluate, write out/<claim>.md and out/<claim>.json; the result."""
    if scale not in SCALES:
        raise ConfigError(f"--scale={scale!r}: expected one of {', '.join(SCALES)}")
    claim = get_claim(name)
    out, runs = Path(out), Path(workdir) / name
    for sweep in claim.sweeps(scale, runs):
        _run_sweep(
            name,
            sweep,
            runs / sweep.name,
            launcher=launcher,
            parallel=parallel,
            timeout_min=timeout_min,
            partition=partition,
            gpus_per_node=gpus_per_node,
        )
    out.mkdir(parents=True, exist_ok=True)
    result = claim.evaluate(runs, scale, out)
    if result.claim != name:
        raise ValueError(f"claim {name!r} returned the result of {result.claim!r}")
    result = dataclasses.replace(result, command=claim.command(scale))
    (out / f"{name}.md.tmp").write_text(result.to_markdown())
    (out / f"{name}.md.tmp").replace(out / f"{name}.md")
    write_json(out / f"{name}.json", result.to_json())
    print(f"memlab: {result.verdict_line()}")
    print(f"memlab: wrote {out / name}.md and .json")
    return result


def _run_sweep(claim: str, sweep: Sweep, workdir: Path, **options) -> None:
    """Launch the sweep's missing runs and wait for them; a RunFailedError naming every run that did not complete."""
    launch_id = launch.new_launch_id()
    todo, done = launch.plan(sweep, workdir, launch_id)
    failed = launch.run_points(sweep, todo, done, workdir, launch_id, wait=True, **options)
    unfinished = [p.name for p in todo if launch.run_status(workdir / p.name) != "completed"]
    bad = list(dict.fromkeys([*failed, *unfinished]))
    if bad:
        lines = [f"{len(bad)} run(s) of sweep {sweep.name!r} for claim {claim!r} did not complete:"]
        for run in bad:
            lines.append(f"  {run} ({_why(workdir / run)}): {workdir / run}")
        lines.append(f"see train.log in each; rerunning `memlab reproduce {claim}` resumes them")
        raise RunFailedError("\n".join(lines))


def _why(run_dir: Path) -> str:
    """The run's status and error as its summary.json records them."""
    summary = run_dir / "summary.json"
    if not summary.exists():
        return "no summary.json"
    data = read_json(summary)
    error = data.get("error")
    return f"{data.get('status', 'unknown')}" + (f": {str(error).splitlines()[-1][:200]}" if error else "")
