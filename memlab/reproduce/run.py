"""The protocol engine: plan a claim (every stage validated before the first step), run its stages through the sweep
launchers, let it turn the runs into parts, attach the checks every part owes, and write its results."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from memlab.errors import ConfigError, RunFailedError
from memlab.registry import CLAIMS
from memlab.reproduce.checks import interior
from memlab.reproduce.claim import SCALES, Claim, Result
from memlab.reproduce.plan import make_plan, print_plan
from memlab.sweep import Sweep, launch
from memlab.sweep import search as searching
from memlab.sweep.stages import Search, Study
from memlab.train.run_dir import read_json, write_json


def get_claim(name: str) -> Claim:
    """An instance of the registered claim `name` (a ConfigError lists the registered ones)."""
    import memlab.reproduce.claims  # noqa: F401  (registers the claims)

    return CLAIMS.get(name)()


def claim_names() -> list[str]:
    """Every registered claim, in registration order (the order of `memlab reproduce all`)."""
    import memlab.reproduce.claims  # noqa: F401

    return list(CLAIMS)


def study_of(claim: Claim, scale: str, workdir: Path) -> Study:
    if scale not in SCALES:
        raise ConfigError(f"--scale={scale!r}: expected one of {', '.join(SCALES)}")
    return Study(claim=claim.name, scale=scale, runs=Path(workdir) / claim.name, stages=claim.stages(scale))


def reproduce(
    name: str,
    *,
    out: Path = Path("results"),
    workdir: Path = Path("runs/reproduce"),
    scale: str = "cpu",
    device: str = "h100",
    mfu: float = 0.3,
    **launch_options,
) -> Result:
    """Run claim `name` at `scale`: validate its whole plan, train what its stages need under workdir/<claim>/
    (completed runs are skipped, interrupted ones resume), evaluate, write out/<claim>.md and .json."""
    claim = get_claim(name)
    study = study_of(claim, scale, workdir)
    print_plan(claim, make_plan(claim, study, device=device, mfu=mfu))  # every config valid before the first step
    for stage in study.stages:
        if isinstance(stage, Search):
            study.searches[stage.name] = run_search(stage, study, launch_options)
        else:
            for sweep in stage.sweeps(study):
                run_sweep(name, sweep, study.runs / sweep.name, **launch_options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = finish(claim.evaluate(study, out), claim, study)
    (out / f"{name}.md.tmp").write_text(result.to_markdown())
    (out / f"{name}.md.tmp").replace(out / f"{name}.md")
    write_json(out / f"{name}.json", result.to_json())
    print(f"memlab: {result.verdict_line()}")
    print(f"memlab: wrote {out / name}.md and .json")
    return result


def run_search(stage: Search, study: Study, launch_options: dict) -> dict:
    """Run the grid; while a group's best value is at an edge of what it tried and its bound allows, add the next
    value past that edge and run again. {group: SearchRecord}."""
    values = {g: sorted(stage.grid) for g in stage.groups}
    while True:
        sweeps = stage.build(study, values)
        for sweep in sweeps:
            run_sweep(study.claim, sweep, study.runs / sweep.name, **launch_options)
        records = search_records(stage, study)
        grow = {g: v for g, r in records.items() if (v := searching.extension(r, stage.factor)) is not None}
        if not grow:
            return records
        for group, value in grow.items():
            values[group] = sorted([*values[group], value])


def search_records(stage: Search, study: Study) -> dict:
    """Each group's record from the completed runs of the search's sweeps (the knob read back from each run; the
    values outside the grid count as its extensions): {group: SearchRecord}."""
    names = [s.name for s in stage.build(study, {g: list(stage.grid) for g in stage.groups})]
    frame = study.frame(*dict.fromkeys(names))
    groups = frame.assign(_group=[stage.group_of(row) for _, row in frame.iterrows()])
    out = {}
    for group in stage.groups:
        rows = groups[groups["_group"] == group]
        if rows.empty:
            raise RunFailedError(f"claim {study.claim!r}: search {stage.name!r} has no completed run of {group}")
        scores = {float(r[stage.knob]): tuple(stage.score(r)) for _, r in rows.iterrows()}
        beyond = sum(not any(math.isclose(v, g) for g in stage.grid) for v in scores)
        out[group] = searching.record(stage.knob, group, scores, beyond, stage.max_extensions)
    return out


def read_study(name: str, scale: str, workdir: Path) -> tuple[Claim, Study]:
    """A claim's study from runs already on disk, launching nothing: each search's records read back from its
    runs (to evaluate, or regenerate a result, from runs at hand)."""
    claim = get_claim(name)
    study = study_of(claim, scale, workdir)
    for stage in study.stages:
        if isinstance(stage, Search):
            study.searches[stage.name] = search_records(stage, study)
    return claim, study


def finish(result: Result, claim: Claim, study: Study) -> Result:
    """The result as the engine writes it: the command, every search's record, each tuned knob's interior check on
    the parts that do not already carry it (every part, for a claim that does not say which read it), and the
    verdict that follows from the parts."""
    parts = list(result.parts)
    named = {c.name for p in parts for c in p.checks}
    missing = [c for r in study.records() if (c := interior(r)).name not in named]
    parts = [dataclasses.replace(p, checks=(*p.checks, *missing)) for p in parts]
    rules = {s.name: s.rule for s in study.stages if isinstance(s, Search)}
    searches = [
        {"stage": name, "rule": rules[name], **r.to_json()} for name, by in study.searches.items() for r in by.values()
    ]
    details = {**result.details, "searches": searches}
    return dataclasses.replace(
        result, parts=parts, details=details, command=claim.command(study.scale), verdict=Result.verdict_of(parts)
    )


def run_sweep(claim: str, sweep: Sweep, workdir: Path, **options) -> None:
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
