"""`memlab status DIR`: one row per run with its state, progress and main metric."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from memlab.sweep.progress import tail_metrics
from memlab.train.run_dir import read_json

STALE_SECONDS = 15 * 60


def run_rows(workdir: Path) -> list[dict]:
    """Runs listed in sweep.json (pending ones included) plus any other run directory below `workdir`."""
    names = read_json(workdir / "sweep.json")["runs"] if (workdir / "sweep.json").exists() else []
    found = sorted(p.parent.name for p in workdir.glob("*/config.json"))
    rows = []
    for name in names + [n for n in found if n not in names]:
        summary_path = workdir / name / "summary.json"
        summary = read_json(summary_path) if summary_path.exists() else {}
        state, step = summary.get("status", "pending"), summary.get("step")
        if state == "running":  # summary.json is written as a run starts and ends; metrics.jsonl grows meanwhile
            metrics_path = workdir / name / "metrics.jsonl"
            step = max(step or 0, tail_metrics(metrics_path, ["step"]).get("step", 0))
            updated = max(p.stat().st_mtime for p in (summary_path, metrics_path) if p.exists())
            if time.time() - updated > STALE_SECONDS:
                state = "stale"  # no update for a while: the process probably died; relaunch resumes it
        metric = "eval/accuracy" if summary.get("eval/accuracy") is not None else "eval/loss"
        rows.append(
            {
                "run": name,
                "state": state,
                "step": step,
                "steps": summary.get("steps"),
                "metric": metric,
                "value": summary.get(metric),
                "error": summary.get("error"),
            }
        )
    return rows


def print_status(workdir: Path) -> list[dict]:
    """Print the table and a count per state; the rows, for callers that want them."""
    rows = run_rows(workdir)
    table = Table(title=f"runs in {workdir}")
    for column in ("run", "state", "step", "main metric"):
        table.add_column(column)
    colours = {"completed": "green", "failed": "red", "running": "yellow", "stale": "magenta"}
    for r in rows:
        progress = f"{r['step']}/{r['steps']}" if r["steps"] else "-"
        value = f"{r['metric']} {r['value']:.4f}" if r["value"] is not None else "-"
        state = f"[{colours.get(r['state'], 'white')}]{r['state']}[/]"
        table.add_row(r["run"], state, progress, value)
    Console().print(table)
    counts = {s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs")
    return rows
