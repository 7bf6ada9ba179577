"""Run directories → one pandas row per run.

A run directory (written by `memlab train`) is the single source of truth for analysis. Runs may still be
running (no summary yet, a half-written last metrics line) or may have failed; both must load, because a
researcher looks at a sweep while it is in flight and wants to see what broke.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

# Stamps worth a column: enough to tell runs apart by code version and machine, not the full package list.
STAMP_KEYS = ("git_commit", "device_kind", "created")
# Summary values that can be recovered from the metrics log when a run has no (or a stale) summary.
PROGRESS_KEYS = ("step", "tokens", "flops")
FINAL_METRIC_KEYS = ("eval/loss", "eval/accuracy", "train/loss")
# Directories inside a run that never hold other runs; not walked.
_SKIP_DIRS = {"checkpoints", "wandb", "__pycache__"}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dot-joined keys; lists become tuples so columns stay hashable (nunique, groupby)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))  # an empty group adds no column
        elif isinstance(value, list):
            flat[name] = tuple(_freeze(v) for v in value)
        else:
            flat[name] = value
    return flat


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def config_columns(config: dict) -> dict[str, Any]:
    """Flattened config without the stamps block, except the few stamps that help compare runs."""
    config = dict(config)
    stamps = config.pop("stamps", None) or {}
    row = flatten(config)
    for key in STAMP_KEYS:
        if key in stamps:
            row[f"stamps.{key}"] = stamps[key]
    return row


def family_of(config: dict) -> str | None:
    """The family label used when a summary does not say: "lm:<mixer>" for LMs, else the model name."""
    model = config.get("model") or {}
    name = model.get("name")
    if name is None:
        return None
    if name != "lm":
        return str(name)
    mixers = model.get("mixers")
    if isinstance(mixers, (list, tuple)):
        mixers = "+".join(dict.fromkeys(str(m) for m in mixers))
    return f"lm:{mixers}" if mixers else "lm"


def read_json(path: Path) -> dict | None:
    """A JSON object, or None when the file is missing or caught half-written."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        warnings.warn(f"{path}: not valid JSON (being written?); ignored", stacklevel=2)
        return None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines log; undecodable lines (a truncated tail, or a tail a resume wrote onto)
    are skipped with a warning rather than failing the whole load."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records, bad = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    truncated_tail = bad == [len(lines)] or bad == [len(lines) - 1] and not lines[-1]
    if bad and not truncated_tail:
        warnings.warn(f"{path}: skipped undecodable lines {bad}", stacklevel=2)
    return records


def load_curves(run_dir: str | Path) -> pd.DataFrame:
    """The metrics log of one run as a DataFrame sorted by step (empty when nothing was logged yet)."""
    records = read_jsonl(Path(run_dir) / "metrics.jsonl")
    frame = pd.DataFrame.from_records(records)
    if "step" in frame:
        frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return frame


def _last_value(curve: pd.DataFrame, key: str) -> Any:
    if key not in curve:
        return None
    values = curve[key].dropna()
    return values.iloc[-1] if len(values) else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def run_row(run_dir: Path, curve: pd.DataFrame | None = None) -> dict[str, Any]:
    """One row: flattened config + summary, with progress filled in from the metrics log where the summary
    is absent or (for a running run) behind."""
    config = read_json(run_dir / "config.json") or {}
    summary = read_json(run_dir / "summary.json") or {}
    row = config_columns(config)
    row.update(summary)
    row.setdefault("status", "running")
    row.setdefault("error", None)
    if _missing(row.get("family")):
        row["family"] = family_of(config)
    if curve is None and (row["status"] == "running" or not all(k in summary for k in PROGRESS_KEYS)):
        curve = load_curves(run_dir)
    if curve is not None and len(curve):
        for key in PROGRESS_KEYS + FINAL_METRIC_KEYS:
            last = _last_value(curve, key)
            if last is None:
                continue
            # A running run's summary is a snapshot; its log is the latest word on progress and metrics.
            if _missing(row.get(key)) or row["status"] == "running":
                row[key] = last
    if _missing(row.get("steps")):
        row["steps"] = (config.get("train") or {}).get("steps")
    row["run"] = (config.get("logging") or {}).get("run_name") or run_dir.name
    row["run_dir"] = str(run_dir)
    return row


def find_run_dirs(path: str | Path) -> list[Path]:
    """Every directory under `path` (itself included) holding a config.json, in sorted order."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no such directory: {root}")
    found: list[Path] = []
    stack = [root]
    while stack:
        here = stack.pop()
        if (here / "config.json").is_file():
            found.append(here)
        stack.extend(p for p in here.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
    return sorted(found)


# Column order: identity first, then what a table of runs shows, then config, then the rest.
_LEADING = ("run", "family", "status", "step", "steps", "params", "params_non_embedding", "tokens", "flops")


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Put the columns people read first at the front; keep the rest in a stable sorted order."""
    lead = [c for c in _LEADING if c in frame]
    config = sorted(c for c in frame if "." in c and c not in lead)
    rest = sorted(c for c in frame if c not in lead and c not in config and c not in ("run_dir", "curve"))
    tail = [c for c in ("run_dir", "curve") if c in frame]
    return frame[lead + config + rest + tail]


def rows_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Records → DataFrame with the standard column order (shared by the local and W&B loaders)."""
    frame = pd.DataFrame.from_records(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=list(_LEADING) + ["run_dir"])
    return order_columns(frame).reset_index(drop=True)


def notebook_sweep_dir(default: str, make_it: str) -> Path:
    """The sweep a notebook reads: $MEMLAB_SWEEP_DIR, else `default` under the checkout it runs in (found from the
    working directory, whether that is the repository root or analysis/); a FileNotFoundError saying how to make
    it (`make_it`, a command) when it is missing."""
    here = Path.cwd()
    root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").exists()), here)
    sweep = Path(os.environ.get("MEMLAB_SWEEP_DIR") or root / default)
    if not sweep.is_dir():
        raise FileNotFoundError(f"no sweep at {sweep}: run `{make_it}` first, or set MEMLAB_SWEEP_DIR")
    return sweep


def load_runs(path: str | Path, *, curves: bool = False) -> pd.DataFrame:
    """One row per run directory under `path`: flattened config ("model.d_model", ...), summary columns
    ("status", "params", "eval/loss", ...), "run" and "run_dir". With `curves=True` a "curve" column holds
    each run's metrics DataFrame; otherwise `frame.curves[run]` loads them on demand."""
    rows = []
    for run_dir in find_run_dirs(path):
        curve = load_curves(run_dir) if curves else None
        row = run_row(run_dir, curve)
        if curves:
            row["curve"] = curve
        rows.append(row)
    return rows_to_frame(rows)
