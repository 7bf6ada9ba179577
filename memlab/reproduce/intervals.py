"""The intervals the evidence checks read: a bootstrap over seeds where there are enough of them, a binomial interval
over evaluation examples where there are not.

Three seeds are the fewest a percentile bootstrap can resample into more than a handful of distinct means; below
that the spread of the seeds cannot be measured, and the only honest interval left is the one the evaluation set
itself gives a rate (Wilson's score interval, which stays inside [0, 1] and is not degenerate at 0 or 1; Newcombe's
hybrid for a difference of two rates). Its n is one seed's evaluation examples, not the seeds' pooled: seeds whose
spread is unknown must not narrow an interval as if they were more examples of one model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

MIN_SEEDS = 3  # the bootstrap over seeds needs at least this many on each side
LEVEL = 0.95
RESAMPLES = 2000
_Z = 1.959963984540054  # the normal quantile of 97.5%


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its interval and how the interval was made."""

    value: float
    lo: float
    hi: float
    method: str  # "bootstrap over N seeds", "Wilson over N examples", ...

    def excludes(self, x: float) -> bool:
        return not self.lo <= x <= self.hi

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}g} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"


def wilson(rate: float, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a rate measured on n independent examples."""
    if n <= 0:
        return 0.0, 1.0
    centre = (rate + _Z**2 / (2 * n)) / (1 + _Z**2 / n)
    half = _Z * math.sqrt(rate * (1 - rate) / n + _Z**2 / (4 * n * n)) / (1 + _Z**2 / n)
    lo = 0.0 if rate <= 0 else max(0.0, centre - half)  # exact at the ends, not a rounding away from them
    hi = 1.0 if rate >= 1 else min(1.0, centre + half)
    return lo, hi


def _resampled_means(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES means of `values` drawn with replacement."""
    return values[rng.integers(0, len(values), (RESAMPLES, len(values)))].mean(axis=1)


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def bootstrap_mean(values, *, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of `values`, resampled with replacement."""
    return _percentiles(_resampled_means(np.asarray(values, float), np.random.default_rng(seed)))


def rate(values, examples: int | None) -> Interval:
    """The mean of per-seed rates with its interval: a bootstrap over >= MIN_SEEDS seeds, else Wilson's over one
    seed's `examples` evaluation examples; a rate without a count of examples needs the seeds."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) >= MIN_SEEDS:
        lo, hi = bootstrap_mean(values)
        return Interval(mean, lo, hi, f"bootstrap over {len(values)} seeds")
    if examples is None:
        return Interval(mean, -math.inf, math.inf, f"{len(values)} seed(s), no example count: no interval")
    n = int(examples)
    lo, hi = wilson(min(max(mean, 0.0), 1.0), n)
    return Interval(mean, lo, hi, f"Wilson over {n} examples")


def difference(a, b, examples_a: int | None = None, examples_b: int | None = None) -> Interval:
    """mean(a) - mean(b) with its interval: a bootstrap over seeds when both sides have >= MIN_SEEDS, else
    Newcombe's hybrid of the two Wilson intervals (rates in [0, 1], each over one seed's evaluation examples)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    value = float(a.mean() - b.mean())
    if len(a) >= MIN_SEEDS and len(b) >= MIN_SEEDS:
        rng = np.random.default_rng(0)
        lo, hi = _percentiles(_resampled_means(a, rng) - _resampled_means(b, rng))
        return Interval(value, lo, hi, f"bootstrap over {len(a)} and {len(b)} seeds")
    if examples_a is None or examples_b is None:
        return Interval(value, -math.inf, math.inf, "fewer than 3 seeds and no example counts: no interval")
    pa, pb = (min(max(float(x.mean()), 0.0), 1.0) for x in (a, b))
    na, nb = int(examples_a), int(examples_b)
    (la, ua), (lb, ub) = wilson(pa, na), wilson(pb, nb)
    lo = value - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = value + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return Interval(value, lo, hi, f"Newcombe over {na} and {nb} examples")


def difference_of(a: Interval, b: Interval) -> Interval:
    """a - b for two independent estimates, each side's half-widths combined in quadrature (Newcombe's rule)."""
    value = a.value - b.value
    lo = value - math.hypot(a.value - a.lo, b.hi - b.value)
    hi = value + math.hypot(a.hi - a.value, b.value - b.lo)
    return Interval(value, lo, hi, f"{a.method}; {b.method}")
