"""What a run records about itself, and where: the run directory (config.json with provenance stamps,
metrics.jsonl, summary.json, the single source of truth for analysis) and the compute the run spent.

Files are written atomically (a temp file, then os.replace) so a reader or a killed writer never sees half a JSON
document; metrics.jsonl is append-only and trimmed back to the restored step on resume, so a resumed run's curve
has no duplicate or orphaned rows. `Compute` turns steps into tokens and training FLOPs (memlab.train.flops).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax

PACKAGES = (
    "memlab",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "tensorstore",
    "wandb",
    "ml-collections",
    "numpy",
)


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    _replace_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable))


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
    """The files of one run. Every process of a multi-process run reads them; only the `writer` (process 0)
    writes, since two processes rewriting a file would race on its temp file."""

    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.checkpoint_dir = self.path / "checkpoints"

    def read_config(self) -> dict | None:
        return read_json(self.config_path) if self.config_path.exists() else None

    def start(self, config: dict) -> None:
        """A fresh run: config.json with this machine's provenance stamps, and no metrics yet."""
        if self.writer:
            write_json(self.config_path, {**config, "stamps": stamps()})
            self.metrics_path.unlink(missing_ok=True)

    def append_metrics(self, row: dict) -> None:
        if self.writer:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps({k: _finite_or_none(v) for k, v in row.items()}) + "\n")

    def trim_metrics(self, last_step: int) -> None:
        """Drop rows after `last_step` (written by a run that died before its next checkpoint) and any torn line."""
        if not self.writer or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= last_step:
                kept.append(line + "\n")
        _replace_atomically(self.metrics_path, "".join(kept))

    def read_summary(self) -> dict:
        return read_json(self.summary_path) if self.summary_path.exists() else {}

    def write_summary(
        self,
        previous: dict,
        fields: dict,
        *,
        status: str,
        progress: dict,
        error: str | None = None,
        wall_seconds: float | None = None,
    ) -> dict:
        """Replace summary.json with the whole summary of the run, the one place it is put together: what the
        run's previous session recorded (a resumed run keeps its measurements until it makes them again), this
        session's `fields`, how far it got (`progress`: step, tokens, flops) and how it stands. Returns it."""
        summary = {**previous, **fields, **progress, "status": status, "error": error}
        if wall_seconds is not None:
            summary["wall_seconds"] = wall_seconds
        summary = {k: _finite_or_none(v) for k, v in summary.items()}
        if self.writer:
            write_json(self.summary_path, summary)
        return summary


def git_commit(cwd: Path | None = None) -> str:
    """HEAD of the memlab checkout (with '-dirty' if it has uncommitted changes), or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def stamps() -> dict:
    """Provenance stamped into every run's config.json: code version, package versions, hardware."""
    devices = jax.devices()
    return {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@dataclasses.dataclass(frozen=True)
class Compute:
    """A run's compute accounting: tokens per optimizer step and (analytic) training FLOPs per token, which differ
    over the first `curriculum_steps` steps when a curriculum trains another objective mix there."""

    tokens_per_step: int
    flops_per_token: float
    curriculum_steps: int = 0
    curriculum_flops_per_token: float = 0.0

    def progress(self, step: int) -> dict:
        """Where the run stands after `step` steps: step, tokens and training FLOPs, the x axes of its curves."""
        early = min(step, self.curriculum_steps)
        flops = self.tokens_per_step * (early * self.curriculum_flops_per_token + (step - early) * self.flops_per_token)
        return {"step": step, "tokens": step * self.tokens_per_step, "flops": flops}

    def steps_for(self, flops: float) -> int:
        """The number of steps (at least 1) whose training FLOPs come nearest a budget of `flops`."""
        early = self.tokens_per_step * self.curriculum_flops_per_token * self.curriculum_steps
        if flops <= early:
            return max(1, round(flops / (self.tokens_per_step * self.curriculum_flops_per_token)))
        return max(1, self.curriculum_steps + round((flops - early) / (self.tokens_per_step * self.flops_per_token)))
