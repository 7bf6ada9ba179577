"""Staged sweeps: what a study (a claim's protocol) declares, and the state its stages read.

A study is a list of stages run in order through the ordinary sweep launchers (finished runs skipped; the engine
is memlab.reproduce.run):
  Stage   runs that depend on no choice (backbones, a ladder, a grid), or on the choices of earlier searches
          (`after`: seeds at the chosen rate, sizes, grids)
  Search  a tuned knob per group (a family's learning rate): its grid, then past whichever edge the best lies at,
          up to a bound (memlab.sweep.search); each group's record says what was tried and chosen
The `Study` is what stages and the claim's evaluation read: the runs directory, the scale, the searches' records.
A plan (memlab.reproduce.plan) builds every stage before anything runs, over every value a choice could take.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from memlab.analysis.runs import load_runs
from memlab.errors import MemlabError
from memlab.sweep.search import MAX_EXTENSIONS, SearchRecord, candidates
from memlab.sweep.spec import Sweep


def exact_match_score(row: pd.Series) -> tuple:
    """A run's score in a search: final exact match (rounded to 4 decimals, so near-ties fall to the loss), then the
    lower final eval loss; a run without an evaluation loses."""
    em, loss = row.get("eval/exact_match"), row.get("eval/loss")
    return (-1.0 if pd.isna(em) else round(float(em), 4), -(math.inf if pd.isna(loss) else float(loss)))


@dataclasses.dataclass(frozen=True)
class Stage:
    """Sweeps built from the study: fixed ones, or ones reading `study.choice(name)` for each name in `after`."""

    name: str
    sweeps: Callable[[Study], list[Sweep]]
    after: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Search:
    """A knob tuned per group: rows {group_key: group, knob: value} become sweeps (`sweeps(study, rows)`); a
    completed run's group is `group_of(row)` and its score `score(row)` (a tuple, higher is better; `rule` says
    it in words)."""

    name: str
    knob: str  # the config key the rows set ("train.lr")
    grid: tuple[float, ...]
    group_key: str  # the label naming a row's group ("@family")
    groups: tuple[str, ...]
    sweeps: Callable[[Study, list[dict]], list[Sweep]]
    group_of: Callable[[pd.Series], str]
    score: Callable[[pd.Series], tuple]
    rule: str
    max_extensions: int = MAX_EXTENSIONS
    factor: float | None = None
    after: tuple[str, ...] = ()

    def build(self, study: Study, values: dict[str, list[float]]) -> list[Sweep]:
        """The sweeps of these values per group; the group and the knob name every run, so a run keeps its name
        when the search adds values."""
        rows = [{self.group_key: g, self.knob: v} for g in self.groups for v in values[g]]
        sweeps = self.sweeps(study, rows)
        for sweep in sweeps:
            sweep.named = (self.group_key, self.knob)
        return sweeps

    def candidates(self) -> list[float]:
        return candidates(self.grid, self.max_extensions, self.factor)


@dataclasses.dataclass
class Study:
    """One claim at one scale: where its runs live, and what its searches chose. In a plan, `planned` maps each
    search to the one value every group's choice takes in this pass."""

    claim: str
    scale: str
    runs: Path
    stages: list
    searches: dict[str, dict[str, SearchRecord]] = dataclasses.field(default_factory=dict)
    planned: dict[str, float] | None = None

    def search(self, name: str) -> Search:
        found = [s for s in self.stages if isinstance(s, Search) and s.name == name]
        if not found:
            raise MemlabError(f"claim {self.claim!r} has no search stage {name!r}")
        return found[0]

    def choice(self, name: str) -> dict[str, float]:
        """Each group's chosen value of search `name` (in a plan: the candidate of this pass for every group)."""
        if self.planned is not None:
            return {g: self.planned[name] for g in self.search(name).groups}
        if name not in self.searches:
            raise MemlabError(f"claim {self.claim!r}: search {name!r} has not run yet; its stage comes first")
        return {g: r.chosen for g, r in self.searches[name].items()}

    def records(self) -> list[SearchRecord]:
        return [r for by_group in self.searches.values() for r in by_group.values()]

    def frame(self, *sweep_names: str, curves: bool = False) -> pd.DataFrame:
        """The completed runs of the named sweeps (under runs/<name>/, with a `sweep` column); an error naming any
        run that did not complete, or a sweep with no runs."""
        frames = []
        for name in sweep_names:
            frame = load_runs(self.runs / name, curves=curves)
            if frame.empty:
                raise MemlabError(f"no runs under {self.runs / name}: run the stage of sweep '{name}' first")
            bad = frame[frame["status"] != "completed"]
            if len(bad):
                raise MemlabError(
                    f"sweep '{name}': runs not completed: {', '.join(bad['run'])} (under {self.runs / name})"
                )
            frames.append(frame.assign(sweep=name))
        return pd.concat(frames, ignore_index=True)

    def plan_passes(self, after: tuple[str, ...]) -> list[dict[str, float]]:
        """Every combination of candidate values of the searches in `after` (one empty pass when there are none)."""
        names = list(after)
        values = [self.search(n).candidates() for n in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
