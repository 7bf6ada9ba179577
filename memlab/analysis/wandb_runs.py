"""The same runs table from a W&B project, for sweeps whose run directories live on another machine.

Rows have the columns `load_runs` produces (flattened config, summary, "run"), with "run_dir" empty and the
W&B id and path added; curves come from each run's history when asked for.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .runs import config_columns, family_of, rows_to_frame

# W&B run states → the run-directory status vocabulary.
_STATES = {"finished": "completed", "running": "running", "crashed": "failed", "failed": "failed", "killed": "failed"}


def _unwrap(config: dict) -> dict:
    """Older API versions return each top-level config entry as {"value": ..., "desc": ...}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value:
            value = value["value"]
        out[key] = value
    return out


def _matches(config: dict, sweep_id: str | None, launch_id: str | None) -> bool:
    logging = config.get("logging") or {}
    return (sweep_id is None or logging.get("sweep_id") == sweep_id) and (
        launch_id is None or logging.get("launch_id") == launch_id
    )


def wandb_row(run: Any, *, curves: bool = False) -> dict[str, Any]:
    """One row from a `wandb.apis.public.Run` (or anything with its attributes)."""
    config = _unwrap(dict(run.config or {}))
    summary = dict(getattr(run, "summary_metrics", None) or {})
    row = config_columns(config)
    row.update({k: v for k, v in summary.items() if not k.startswith("_")})
    if "status" not in summary:
        row["status"] = _STATES.get(getattr(run, "state", None), "running")
    row.setdefault("error", None)
    if "wall_seconds" not in row and "_runtime" in summary:
        row["wall_seconds"] = summary["_runtime"]
    if "step" not in row and "_step" in summary:
        row["step"] = summary["_step"]
    if row.get("family") is None:
        row["family"] = family_of(config)
    row["run"] = (config.get("logging") or {}).get("run_name") or run.name
    row["run_dir"] = None
    row["wandb_run_id"] = run.id
    path = getattr(run, "path", None)
    row["wandb_path"] = "/".join(path) if isinstance(path, (list, tuple)) else path
    if curves:
        row["curve"] = wandb_curve(run)
    return row


def wandb_curve(run: Any) -> pd.DataFrame:
    """A run's full logged history (every step, not W&B's sampled `history()`), sorted by step."""
    frame = pd.DataFrame.from_records(list(run.scan_history()))
    frame = frame[[c for c in frame if not c.startswith("_")] + (["_step"] if "_step" in frame else [])]
    if "step" not in frame and "_step" in frame:
        frame = frame.rename(columns={"_step": "step"})
    if "step" in frame:
        frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return frame


def load_wandb_runs(
    project: str,
    *,
    entity: str | None = None,
    sweep_id: str | None = None,
    launch_id: str | None = None,
    api: Any = None,
    curves: bool = False,
) -> pd.DataFrame:
    """Runs of a W&B project (optionally one sweep / one launch) as a `load_runs`-style DataFrame.

    The sweep/launch filter is sent to the server (so big projects are not downloaded) and applied again
    here, because server-side matching of nested config keys has differed between W&B versions."""
    if api is None:
        import wandb

        api = wandb.Api()
    filters: dict[str, Any] = {}
    if sweep_id is not None:
        filters["config.logging.sweep_id"] = sweep_id
    if launch_id is not None:
        filters["config.logging.launch_id"] = launch_id
    path = f"{entity}/{project}" if entity else project
    rows = []
    for run in api.runs(path, filters=filters or None):
        if _matches(_unwrap(dict(run.config or {})), sweep_id, launch_id):
            rows.append(wandb_row(run, curves=curves))
    return rows_to_frame(rows)
