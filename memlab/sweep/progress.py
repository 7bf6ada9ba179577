"""Live progress of a local sweep, read from the run directories its `memlab train` processes write.

The runs report nothing to the sweep directly: each writes summary.json (its status, and the step it started from
and ended at) and appends a row per logged step to metrics.jsonl, and the sweep polls those files, metrics.jsonl
only from its tail, so watching a long run costs what watching a short one does. On a terminal it draws rich
progress bars; elsewhere (CI, logs, tests) it prints plain lines: one every `every` seconds and one per finished
run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from memlab.train.run_dir import read_json

POLL_SECONDS = 0.5  # file reads at most twice a second
TAIL_BYTES = 8192  # a few dozen metrics rows
SHOWN = {"train/loss": ("loss", "{:.4f}"), "eval/accuracy": ("acc", "{:.3f}")}  # key -> (label, format)


def tail_metrics(path: Path, keys: Iterable[str], tail_bytes: int = TAIL_BYTES) -> dict[str, float]:
    """The newest value of each key among the last rows of a metrics.jsonl; a torn or cut line is skipped."""
    keys = list(keys)
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    found: dict[str, float] = {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        found.update({k: row[k] for k in keys if k not in found and row.get(k) is not None})
        if len(found) == len(keys):
            break
    return found


def fmt_seconds(seconds: float | None) -> str:
    """`0:01:10`, or `?` while there is nothing to estimate from."""
    return "?" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


@dataclasses.dataclass
class RunView:
    """One run as the display shows it."""

    name: str
    state: str  # queued, starting, running, done, failed
    step: int
    steps: int
    metrics: dict[str, float]  # the newest value of each SHOWN key the run has logged
    eta: float | None  # seconds left, from the run's own pace since it started

    def shown(self) -> str:
        """`loss 3.2101 acc 0.250`: the newest logged value of each SHOWN metric."""
        return " ".join(
            f"{label} {form.format(self.metrics[key])}" for key, (label, form) in SHOWN.items() if key in self.metrics
        )

    def describe(self) -> str:
        """`seed=1 step 15/20 loss 3.2101 acc 0.250 eta 0:00:04`, or `seed=1 starting` before it reports."""
        if self.state == "starting":
            return f"{self.name} starting"
        eta = f"eta {fmt_seconds(self.eta)}" if self.state == "running" and self.eta is not None else ""
        return " ".join(t for t in (self.name, f"step {self.step}/{self.steps}", self.shown(), eta) if t)


@dataclasses.dataclass
class SweepView:
    """The runs of one launch, the steps they have made and have left, the time since it began and the time left."""

    runs: list[RunView]
    steps_done: int  # by this launch (a resumed run counts from where it resumed)
    steps_left: int  # queued and running runs' remaining steps
    elapsed: float
    eta: float | None

    def count(self, *states: str) -> int:
        return sum(r.state in states for r in self.runs)

    def headline(self) -> str:
        """`1/2 runs done, 1 running, eta 0:00:12` (failed runs count as done, and are named)."""
        failed = self.count("failed")
        text = f"{self.count('done', 'failed')}/{len(self.runs)} runs done" + (f" ({failed} failed)" if failed else "")
        running = self.count("starting", "running")
        if running:
            text += f", {running} running, eta {fmt_seconds(self.eta)}"
        return text

    def line(self) -> str:
        """The periodic plain line: the headline, then every running run."""
        active = [r.describe() for r in self.runs if r.state in ("starting", "running")]
        return " | ".join([self.headline(), *active])


@dataclasses.dataclass
class _Run:
    steps: int
    step: int  # newest known; before its process reports, the step an earlier launch left
    base: int  # the lowest step seen: this launch's progress counts from there (resumed runs)
    state: str = "queued"
    started: float = 0.0
    metrics: dict = dataclasses.field(default_factory=dict)
    metrics_size: int = -1


class SweepProgress:
    """What a local sweep is doing, from its run directories: runs done of total, each running run's step, loss and
    accuracy, and the time left (steps left over the steps per second this launch has managed so far).

    The launcher calls `started` and `finished`; used as a context manager it polls in a thread and draws or prints.
    `clock` (wall time, comparable with file mtimes) is for tests.
    """

    def __init__(
        self,
        workdir: Path,
        steps: dict[str, int],
        *,
        title: str = "sweep",
        every: float = 30.0,
        live: bool | None = None,
        console: Console | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workdir, self.title, self.every, self.clock = Path(workdir), title, every, clock
        self.console = console or Console()
        self.live = self.console.is_interactive if live is None else live
        before = {name: self._summary(name).get("step") or 0 for name in steps}
        self.runs = {name: _Run(steps=n, step=before[name], base=before[name]) for name, n in steps.items()}
        self.t0 = self._last_line = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def _summary(self, name: str, newer_than: float | None = None) -> dict:
        path = self.workdir / name / "summary.json"
        try:
            if newer_than is not None and path.stat().st_mtime < newer_than:
                return {}  # written by an earlier launch: this run's process has not reported yet
            return read_json(path)
        except (FileNotFoundError, ValueError):
            return {}

    def _poll(self, name: str) -> None:
        """Read a launched run's summary and, when it grew, the tail of its metrics."""
        run = self.runs[name]
        summary = self._summary(name, newer_than=run.started)
        if not summary:
            return
        run.state = "running" if run.state == "starting" else run.state
        run.base = min(run.base, summary.get("step") or 0)
        metrics_path = self.workdir / name / "metrics.jsonl"
        try:
            size = metrics_path.stat().st_size
        except FileNotFoundError:  # not written yet, or just removed by a fresh start
            size = 0
        if size and size != run.metrics_size:
            run.metrics_size = size
            run.metrics.update(tail_metrics(metrics_path, ["step", *SHOWN]))
        # summary.json has the step a run started from and ended at; in between, its newest metrics row has it
        run.step = max(summary.get("step") or 0, run.metrics.get("step", 0))

    def started(self, name: str) -> None:
        """A run's process is starting: its files count from now on (older ones are an earlier launch's)."""
        with self._lock:
            run = self.runs[name]
            run.state, run.started = "starting", self.clock()
            if self._bars is not None:
                self._tasks[name] = self._bars.add_task(
                    name, total=run.steps, completed=run.step, count=f"{run.step}/{run.steps}", info="starting", eta="?"
                )
            else:
                self._say(f"start {name}")

    def finished(self, name: str, code: int) -> None:
        """Record how a run's process ended, and say so in one line with its last numbers."""
        with self._lock:
            run = self.runs[name]
            self._poll(name)
            run.state = "done" if code == 0 else "failed"
            view = self._view()
            described = next(r for r in view.runs if r.name == name).describe()
            how = "done" if code == 0 else f"FAILED (exit {code}, see {self.workdir / name}/train.log)"
            self._say(f"{how} {described} | {view.headline()}")
            if self._bars is not None and name in self._tasks:
                self._bars.remove_task(self._tasks.pop(name))

    def view(self) -> SweepView:
        """Read the launched runs' files and return where the sweep stands."""
        with self._lock:
            for name, run in self.runs.items():
                if run.state in ("starting", "running"):
                    self._poll(name)
            return self._view()

    def _view(self) -> SweepView:
        now = self.clock()
        views = []
        for name, run in self.runs.items():
            pace = (run.step - run.base) / (now - run.started) if run.started and now > run.started else 0
            eta = (run.steps - run.step) / pace if pace > 0 else None
            views.append(RunView(name, run.state, run.step, run.steps, dict(run.metrics), eta))
        done = sum(r.step - r.base for r in self.runs.values() if r.state != "queued")
        left = sum(r.steps - r.step for r in self.runs.values() if r.state not in ("done", "failed"))
        eta = left * (now - self.t0) / done if done > 0 else None
        return SweepView(views, done, left, now - self.t0, eta)

    def _say(self, text: str) -> None:
        """One line (above the bars when they are drawn), never wrapped, so a log can be searched line by line."""
        self.console.print(f"[sweep] {text}", markup=False, highlight=False, soft_wrap=True)

    def tick(self) -> None:
        """One poll: refresh the bars, or print the plain line when `every` seconds have passed since the last."""
        if self._bars is None and self.clock() - self._last_line < self.every:
            return
        view = self.view()
        with self._lock:
            if self._bars is None:
                self._last_line = self.clock()
                self._say(view.line())
                return
            finished, running = view.count("done", "failed"), view.count("starting", "running")
            self._bars.update(
                self._tasks[self.title],
                total=view.steps_done + view.steps_left,  # a bar of steps
                completed=view.steps_done,
                count=f"{finished}/{len(view.runs)} runs",
                info=f"{running} running",
                eta=fmt_seconds(view.eta),
            )
            for r in view.runs:
                if r.name in self._tasks:
                    self._bars.update(
                        self._tasks[r.name],
                        completed=r.step,
                        count=f"{r.step}/{r.steps}",
                        info=r.shown() or r.state,
                        eta=fmt_seconds(r.eta),
                    )

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.tick()

    def __enter__(self) -> SweepProgress:
        if self.live:
            self._bars = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.fields[count]}", markup=False),
                TextColumn("{task.fields[info]}", markup=False),
                TextColumn("eta {task.fields[eta]}", markup=False),
                console=self.console,
                refresh_per_second=2,
            )
            left = sum(r.steps - r.step for r in self.runs.values())
            self._tasks[self.title] = self._bars.add_task(
                self.title, total=left, count=f"0/{len(self.runs)} runs", info="", eta="?"
            )
            self._bars.start()
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bars is not None:
            self.tick()
            self._bars.stop()
        self._bars = None
        view = self.view()
        self._say(f"{view.headline()} in {fmt_seconds(view.elapsed)}")
