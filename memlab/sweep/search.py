"""A search over a tuned knob (a learning rate, a write rate, a gate initialisation) that cannot end at an edge.

A best value at an end of the grid means the family might do better beyond it, so the search tries the next value
in that direction, again and again up to a bound; the record keeps every value tried, its score and the choice.
A search that reaches its bound still at an edge fails the `interior` evidence check (memlab.reproduce.checks).

The next value: on the 1-3-10 ladder (1e-3, 3e-3, 1e-2, ...) when every grid value lies on it, else the grid's own
ratio at that end (or `factor`, for a grid of one value). A knob with a value <= 0 (a gate's bias initialisation,
-1.5 or -4) lives on a linear scale: the grid's own difference at that end (or `factor` as the step).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

DEFAULT_FACTOR = 3.0  # a grid of one value off the 1-3-10 ladder extends by this factor
MAX_EXTENSIONS = 2


@dataclasses.dataclass(frozen=True)
class SearchRecord:
    """What a search of `knob` for `group` tried, how each value scored (higher is better) and what it chose."""

    knob: str
    group: str
    tried: tuple[float, ...]  # ascending
    scores: tuple[tuple, ...]  # one per tried value
    chosen: float
    extensions: int
    max_extensions: int

    @property
    def interior(self) -> bool:
        return self.tried[0] < self.chosen < self.tried[-1]

    @property
    def at_edge(self) -> int:
        """0 inside; +1 at the high end (a grid of one value counts as its high end); -1 at the low end."""
        if self.interior:
            return 0
        return 1 if self.chosen == self.tried[-1] else -1

    @property
    def bound_reached(self) -> bool:
        return not self.interior and self.extensions >= self.max_extensions

    @classmethod
    def from_json(cls, data: dict) -> SearchRecord:
        fields = ("knob", "group", "tried", "scores", "chosen", "extensions", "max_extensions")
        record = {k: data[k] for k in fields}
        record["tried"] = tuple(record["tried"])
        record["scores"] = tuple(tuple(s) for s in record["scores"])
        return cls(**record)

    def to_json(self) -> dict:
        return {
            "knob": self.knob,
            "group": self.group,
            "tried": list(self.tried),
            "scores": [list(s) for s in self.scores],
            "chosen": self.chosen,
            "interior": self.interior,
            "extensions": self.extensions,
            "max_extensions": self.max_extensions,
            "bound_reached": self.bound_reached,
        }


def _mantissa(value: float) -> float:
    return value / 10 ** math.floor(math.log10(value) + 1e-9)


def _on_ladder(value: float) -> bool:
    return any(math.isclose(_mantissa(value), m, rel_tol=1e-6) for m in (1.0, 3.0))


def next_value(grid: Sequence[float], direction: int, factor: float | None = None) -> float:
    """The value beyond `grid`'s end in `direction` (+1 up, -1 down), to three significant digits."""
    grid = sorted(grid)
    end = grid[-1] if direction > 0 else grid[0]
    if any(v <= 0 for v in grid):  # a linear knob
        step = factor or (1.0 if len(grid) < 2 else (grid[-1] - grid[-2] if direction > 0 else grid[1] - grid[0]))
        return float(f"{end + direction * step:.3g}")
    if factor is None and all(_on_ladder(v) for v in grid):
        threes = math.isclose(_mantissa(end), 3.0, rel_tol=1e-6)
        step = (10 / 3 if threes else 3.0) if direction > 0 else (3.0 if threes else 10 / 3)
    elif factor is not None:
        step = factor
    else:
        step = DEFAULT_FACTOR if len(grid) < 2 else (grid[-1] / grid[-2] if direction > 0 else grid[1] / grid[0])
    return float(f"{end * step**direction:.3g}")


def candidates(grid: Sequence[float], max_extensions: int = MAX_EXTENSIONS, factor: float | None = None) -> list:
    """Every value a search from `grid` could try (the grid and up to `max_extensions` beyond each end): what a
    plan validates for the stages that depend on the choice."""
    low, high = sorted(grid), sorted(grid)
    for _ in range(max_extensions):
        low = [next_value(low, -1, factor), *low]
        high = [*high, next_value(high, +1, factor)]
    return sorted(set(low) | set(high))


def record(knob: str, group: str, scores: dict[float, tuple], extensions: int, max_extensions: int) -> SearchRecord:
    """The record of the values scored so far; ties go to the value tried first in ascending order."""
    tried = tuple(sorted(scores))
    chosen = max(tried, key=lambda v: scores[v])
    return SearchRecord(knob, group, tried, tuple(tuple(scores[v]) for v in tried), chosen, extensions, max_extensions)


def extension(rec: SearchRecord, factor: float | None = None) -> float | None:
    """The next value to try for `rec`, or None when its choice is interior or its bound is reached."""
    if rec.interior or rec.extensions >= rec.max_extensions:
        return None
    return next_value(rec.tried, rec.at_edge, factor)


def search(
    knob: str,
    group: str,
    grid: Sequence[float],
    score: Callable[[float], tuple],
    *,
    max_extensions: int = MAX_EXTENSIONS,
    factor: float | None = None,
) -> SearchRecord:
    """Score every grid value, then extend past the edge the best lies at until it is interior or the bound is
    reached: the in-process form (a write rate tried by writing), the engine's `Search` stage runs the same rule
    over training runs."""
    scores = {float(v): tuple(score(float(v))) for v in grid}
    extensions = 0
    while (value := extension(record(knob, group, scores, extensions, max_extensions), factor)) is not None:
        scores[value] = tuple(score(value))
        extensions += 1
    return record(knob, group, scores, extensions, max_extensions)
