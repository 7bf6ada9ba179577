"""Evidence checks: what a skeptical reviewer asks of a part of a claim before believing its numbers, computed.

Each check is a function of measured values that returns a `Check` (name, kind, passed, one-line detail). `evidence`
checks decide whether a part is decided at all: one that fails makes the part inconclusive whatever its numbers
say. `sanity` checks are shown beside them and decide nothing (a control equal to its reference by construction,
a criterion the configuration alone fixes, how a compute ratio decomposes). No part writes its own booleans for
these questions: it hands its measurements to these functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from memlab.reproduce.intervals import Interval
from memlab.sweep.search import SearchRecord

KINDS = ("evidence", "sanity")
# Convergence: the best of the last CONVERGED_WINDOW of the evaluations improves on the best before them by at most
# CONVERGED_TOLERANCE of the curve's whole improvement (first evaluation to its best), over >= CONVERGED_MIN_EVALS.
CONVERGED_WINDOW = 0.25
CONVERGED_TOLERANCE = 0.05
CONVERGED_MIN_EVALS = 4
CONVERGED_RULE = (
    f"the best of the last {CONVERGED_WINDOW:.0%} of evaluations improves on the best before them by at most "
    f"{CONVERGED_TOLERANCE:.0%} of the curve's whole improvement (>= {CONVERGED_MIN_EVALS} evaluations)"
)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    kind: str  # evidence | sanity
    passed: bool
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"check {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "passed": bool(self.passed), "detail": self.detail}


def interior(record: SearchRecord) -> Check:
    """A tuned knob's choice strictly inside what was tried: at an edge, the family might do better beyond it."""
    tried = ", ".join(f"{v:g}" for v in record.tried)
    where = f"{record.knob} for {record.group}: chose {record.chosen:g} of {tried}"
    if record.interior:
        return Check(f"{record.knob} interior ({record.group})", "evidence", True, where)
    why = f"the bound of {record.max_extensions} extension(s) was reached" if record.bound_reached else "edge"
    return Check(f"{record.knob} interior ({record.group})", "evidence", False, f"{where}: at an edge ({why})")


def interiors(study, name: str, *groups: str) -> list[Check]:
    """The interior checks of `study`'s search `name` for `groups` (all of its groups by default)."""
    chosen = study.searches.get(name, {})
    return [interior(chosen[g]) for g in (groups or chosen) if g in chosen]


def converged(name: str, values: Sequence[float], *, higher_is_better: bool) -> Check:
    """The metric a part reads has stopped improving by its last evaluations (CONVERGED_RULE)."""
    y = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(y) < CONVERGED_MIN_EVALS:
        return Check(
            f"converged ({name})", "evidence", False, f"{len(y)} evaluations: too few to tell ({CONVERGED_RULE})"
        )
    y = y if higher_is_better else -y
    late = max(1, math.ceil(CONVERGED_WINDOW * len(y)))
    before, best_late = float(y[:-late].max()), float(y[-late:].max())
    whole = max(float(y.max()) - float(y[0]), 0.0)
    gain = max(best_late - before, 0.0)
    ok = whole == 0.0 or gain <= CONVERGED_TOLERANCE * whole
    detail = f"the last {late} of {len(y)} evaluations gain {gain:.3g}" + (
        f" ({gain / whole:.0%} of the curve's {whole:.3g})" if whole > 0 else " (a flat curve)"
    )
    return Check(f"converged ({name})", "evidence", bool(ok), detail + ("" if ok else ": still improving"))


def fixed_budget(name: str, reason: str) -> Check:
    """A part that reads a fixed budget on purpose (equal compute, say) says so in place of `converged`."""
    return Check(f"fixed budget ({name})", "evidence", True, f"reads a fixed budget on purpose: {reason}")


def real_difference(name: str, diff: Interval) -> Check:
    """A comparison counts only when the interval of the difference excludes no difference."""
    ok = diff.excludes(0.0)
    detail = f"difference {diff.text()} ({diff.method})" + ("" if ok else ": the interval includes 0")
    return Check(f"difference real ({name})", "evidence", bool(ok), detail)


def above_chance(name: str, value: Interval, chance: float) -> Check:
    """A value within its interval of chance is "at chance": it can neither win nor lose a comparison."""
    ok = value.lo > chance
    detail = f"{value.text()} ({value.method}) against chance {chance:.3g}" + ("" if ok else ": at chance")
    return Check(f"above chance ({name})", "evidence", bool(ok), detail)


def at_chance(name: str, value: Interval, chance: float) -> Check:
    """A negative control (an unwritten memory, a shuffled one) must stay within its interval of chance: above it,
    the probe leaks the answer and no recall can be believed."""
    ok = value.lo <= chance
    detail = f"{value.text()} ({value.method}) against chance {chance:.3g}" + ("" if ok else ": above chance, a leak")
    return Check(f"negative control at chance ({name})", "evidence", bool(ok), detail)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A number a criterion compares with, and where it comes from: the source (cited), or a share of the way
    between two measured controls. Any other threshold is memlab's own and cannot decide a part."""

    value: float
    origin: str  # source | relative | absolute
    cite: str
    controls: tuple[float, float] | None = None  # the two measured controls of a relative threshold

    @classmethod
    def from_source(cls, value: float, cite: str) -> Threshold:
        return cls(float(value), "source", cite)

    @classmethod
    def relative(cls, share: float, low: tuple[str, float], high: tuple[str, float]) -> Threshold:
        """`share` of the way from control `low` to control `high` (each (name, measured value))."""
        value = low[1] + share * (high[1] - low[1])
        cite = f"{share:.0%} of the way from {low[0]} ({low[1]:.3g}) to {high[0]} ({high[1]:.3g})"
        return cls(float(value), "relative", cite, (float(low[1]), float(high[1])))

    @classmethod
    def absolute(cls, value: float, why: str) -> Threshold:
        return cls(float(value), "absolute", why)

    def check(self, name: str) -> Check:
        if self.origin == "source" and self.cite:
            return Check(f"threshold from the source ({name})", "evidence", True, f"{self.value:.3g}: {self.cite}")
        if self.origin == "relative" and self.controls is not None:
            ok = self.controls[0] != self.controls[1]
            why = "" if ok else ": the two controls measure the same, no room between them"
            return Check(
                f"threshold relative to controls ({name})", "evidence", ok, f"{self.value:.3g}: {self.cite}{why}"
            )
        return Check(
            f"threshold from the source ({name})",
            "evidence",
            False,
            f"{self.value:.3g} is neither the source's nor relative to measured controls ({self.cite})",
        )


DECIDED_BY = ("measurement", "configuration", "construction")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One clause of a part's criterion: whether it holds and what decides it. Only clauses decided by measurement
    (training, a fit, a study) are evidence; the others are properties of the setup, shown as sanity checks."""

    name: str
    holds: bool
    decided_by: str
    detail: str

    def __post_init__(self) -> None:
        if self.decided_by not in DECIDED_BY:
            raise ValueError(f"condition {self.name!r}: decided_by {self.decided_by!r} not in {', '.join(DECIDED_BY)}")

    def sanity(self) -> Check:
        what = {
            "configuration": "decided by configuration: a property of the setup, not evidence",
            "construction": "equal to its reference by construction: a sanity check, not evidence",
        }[self.decided_by]
        return Check(f"{self.name}", "sanity", bool(self.holds), f"{self.detail} ({what})")


def measured(name: str, holds: bool, detail: str) -> Condition:
    """A clause decided by what the runs (or a fit, or a study) measured: the only kind that is evidence."""
    return Condition(name, bool(holds), "measurement", detail)


def by_configuration(name: str, holds: bool, value: float, configured: float, detail: str) -> Condition:
    """A clause on a quantity (a parameter share, a FLOP count) that is what the configuration alone gives (the
    measured value equals the one computed from the config before training): never evidence."""
    decided = "configuration" if math.isclose(value, configured, rel_tol=1e-9, abs_tol=1e-12) else "measurement"
    return Condition(name, bool(holds), decided, f"{detail}; measured {value:.4g}, from the config {configured:.4g}")


def control(name: str, holds: bool, control_values, reference_values, detail: str) -> Condition:
    """A clause about a control: one whose values equal its reference bit for bit (a zeroed state that reproduces
    the backbone) is equal by construction and says nothing about training."""
    a, b = np.asarray(control_values, float), np.asarray(reference_values, float)
    equal = a.shape == b.shape and a.tobytes() == b.tobytes()
    return Condition(name, bool(holds), "construction" if equal else "measurement", detail)


def compute_ratio(name: str, ratio: float, per_example: float, criterion: float) -> Check:
    """A compute-efficiency ratio as (FLOPs per example ratio) x (examples-to-target ratio), so a reader sees what
    the criterion asks of sample efficiency: criterion / per_example is how many times the baseline's examples the
    cheaper model may use."""
    if not (math.isfinite(ratio) and per_example > 0):
        return Check(f"compute ratio decomposed ({name})", "sanity", False,
                     f"ratio {ratio:.3g}, FLOPs per example {per_example:.3g}x: no decomposition")  # fmt: skip
    examples = ratio / per_example
    asks = criterion / per_example
    detail = (
        f"{ratio:.3g}x = {per_example:.3g}x FLOPs per example x {examples:.3g}x examples to target; >= {criterion:g}x "
        f"asks the baseline to need >= {asks:.3g}x the examples"
        + (
            " (the cheaper model must also learn faster per example)"
            if asks > 1
            else " (equal sample efficiency suffices)"
        )
    )
    return Check(f"compute ratio decomposed ({name})", "sanity", True, detail)
