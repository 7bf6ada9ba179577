"""Watching a run as it trains: the Weights & Biases mirror of metrics.jsonl and the live progress display.

W&B is always on: offline by default (files under <run dir>/wandb), online when the user is logged in (an API key
in the environment or a W&B entry in netrc) or asks for it with WANDB_MODE / logging.wandb_mode; `disabled` turns
the mirror off (metrics.jsonl is written regardless). The key itself is never read or written by memlab. The run
id is kept in the checkpoint so a resumed run continues the same W&B run. Progress is a rich bar on a terminal and
plain periodic lines otherwise (logs, sweeps).
"""

from __future__ import annotations

import netrc
import os
import secrets
import sys
import time
from pathlib import Path

import ml_collections
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def logged_in() -> bool:
    """Whether W&B credentials exist (presence only; the key is never read into memlab)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_mode(configured: str) -> str:
    """An explicit logging.wandb_mode (offline | online | disabled) is used as set. The default, 'auto', follows
    WANDB_MODE when it is set, else goes online for a logged-in user and offline otherwise."""
    if configured != "auto":
        return configured
    return os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")


def wandb_run_id(saved: str | None) -> str:
    """The id a resumed run saved in its checkpoint, else the one a W&B agent set, else a new one."""
    return saved or os.environ.get("WANDB_RUN_ID") or secrets.token_hex(6)


class WandbLogger:
    def __init__(
        self, logging_config: ml_collections.ConfigDict, run_dir: Path, config_dict: dict, run_id: str, is_main: bool
    ):
        import wandb

        self.run = None
        self.run_id = run_id
        self.mode = resolve_mode(logging_config.wandb_mode)
        if not is_main or self.mode == "disabled":
            return
        self.run = wandb.init(
            project=logging_config.project,
            entity=logging_config.entity or None,
            group=logging_config.group or None,
            tags=list(logging_config.tags) or None,
            name=logging_config.run_name or run_dir.name,
            id=self.run_id,
            resume="allow",
            mode=self.mode,
            dir=str(run_dir),
            config=config_dict,
            settings=wandb.Settings(silent=True, console="off", save_code=False, x_disable_stats=True),
        )

    def log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])

    def summary(self, fields: dict) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in fields.items() if isinstance(v, (int, float, str))})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


class TrainProgress:
    """Context manager: a live bar on a terminal (when `enabled`), else a plain line every 30 s and at the end."""

    def __init__(self, name: str, total: int, start: int, enabled: bool):
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.name, self.total, self._last_print = name, total, 0.0
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.live,
        )
        self.task = self.bar.add_task(name, total=total, completed=start, status="compiling")
        self.enabled = enabled

    def __enter__(self) -> TrainProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def update(self, step: int, row: dict) -> None:
        status = f"loss {row.get('train/loss', float('nan')):.4f}  {row.get('tokens_per_s', 0):,.0f} tok/s"
        if "eval/accuracy" in row:
            status += f"  eval acc {row['eval/accuracy']:.3f}"
        self.bar.update(self.task, completed=step, status=status)
        if self.enabled and not self.live and (time.time() - self._last_print > 30 or step == self.total):
            self._last_print = time.time()
            print(f"[{self.name}] step {step}/{self.total}  {status}", file=sys.stderr, flush=True)
