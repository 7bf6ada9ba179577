"""Live progress for a training run: a rich bar on a terminal, plain periodic lines otherwise (logs, sweeps)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, name: str, total: int, start: int, enabled: bool):
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.name, self.total, self._last_print = name, total, 0.0
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), console=self.console, disable=not self.live)
        self.task = self.bar.add_task(name, total=total, completed=start, status="compiling")
        self.enabled = enabled

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def update(self, step: int, row: dict) -> None:
        status = f"loss {row.get('train/loss', float('nan')):.4f}  {row.get('tokens_per_s', 0):,.0f} tok/s"
        if "eval/accuracy" in row:
            status += f"  eval acc {row['eval/accuracy']:.3f}"
        self.bar.update(self.task, completed=step, status=status)
        if self.enabled and not self.live and (time.time() - self._last_print > 30 or step == self.total):
            self._last_print = time.time()
            print(f"[{self.name}] step {step}/{self.total}  {status}", file=sys.stderr, flush=True)
