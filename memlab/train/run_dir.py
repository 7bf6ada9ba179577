"""The run directory: config.json, metrics.jsonl, summary.json (the single source of truth for analysis).

Files are written atomically (write to a temp file, then rename) so a reader or a killed writer never leaves
half a JSON document; metrics.jsonl is append-only and trimmed back to the restored step on resume, so a
resumed run's curve has no duplicate or orphaned rows.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.checkpoint_dir = self.path / "checkpoints"

    def read_config(self) -> dict | None:
        return read_json(self.config_path) if self.config_path.exists() else None

    def write_config(self, config: dict, stamps: dict) -> None:
        write_json(self.config_path, {**config, "stamps": stamps})

    def append_metrics(self, rows: list[dict]) -> None:
        if not rows:
            return
        with self.metrics_path.open("a") as f:
            for row in rows:
                f.write(json.dumps({k: _finite_or_none(v) for k, v in row.items()}) + "\n")
            f.flush()

    def trim_metrics(self, last_step: int) -> None:
        """Drop rows after `last_step` (written by a run that died before its next checkpoint) and any torn line."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= last_step:
                kept.append(line + "\n")
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, self.metrics_path)

    def read_summary(self) -> dict:
        return read_json(self.summary_path) if self.summary_path.exists() else {}

    def update_summary(self, **fields: Any) -> dict:
        summary = {**self.read_summary(), **{k: _finite_or_none(v) for k, v in fields.items()}}
        write_json(self.summary_path, summary)
        return summary
