"""A claim's effect along a scale axis (width, context length, chunk length, backbone size): fitted, judged by the
same diagnostics as every scaling law memlab draws, and forecast at the source's scale only where the law is
identified.

The law is a pure power law, effect = A * x^-alpha (alpha of either sign: an effect that shrinks or grows with
scale), fitted in log space, so every effect must be positive (a gap, a ratio, a share); with 2 parameters and
the diagnostics' 2 degrees of freedom it takes at least 4 points. The forecast's interval resamples the ladder's
points (a bootstrap of the fit), which says how far the law can move on these points, not how far the source's
scale is from them: a forecast decades past the ladder is an extrapolation and says so.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from memlab.analysis.fits import diagnose_power_law, fit_pure_power_law
from memlab.reproduce.checks import Check
from memlab.reproduce.intervals import LEVEL

MIN_POINTS = 4
BOOTSTRAP = 200


@dataclasses.dataclass(frozen=True)
class LadderPoint:
    x: float
    effect: float
    lo: float
    hi: float


@dataclasses.dataclass
class Ladder:
    """The effect at each point of `axis`; `fit(source_x)` fills `law` and `forecast` (or `reason`)."""

    axis: str
    points: list[LadderPoint]
    effect: str = "effect"  # what the effect is, for the report
    law: dict | None = None
    forecast: dict | None = None
    reason: str = ""

    def fit(self, source_x: float | None) -> Ladder:
        xs = np.array([p.x for p in self.points], float)
        ys = np.array([p.effect for p in self.points], float)
        if len(self.points) < MIN_POINTS or np.unique(xs).size < MIN_POINTS:
            self.reason = f"{np.unique(xs).size} distinct points along {self.axis}; a law needs {MIN_POINTS}"
            return self
        if not (np.all(np.isfinite(ys)) and np.all(ys > 0)):
            self.reason = "the effect is not a positive number at every point (a bound, or <= 0): no law in log space"
            return self
        fit = fit_pure_power_law(xs, ys, bootstrap=BOOTSTRAP, seed=0)
        diagnostics = diagnose_power_law(xs, ys, fit)
        self.law = {**fit.to_dict(), "diagnostics": diagnostics.to_dict(), "identified": diagnostics.identified}
        if not diagnostics.identified:
            self.reason = "law not identified: " + "; ".join(diagnostics.reasons)
        elif source_x is None:
            self.reason = "the source names no scale along this axis"
        else:
            self.forecast = self._forecast(xs, ys, float(source_x), float(fit.predict(source_x)))
        return self

    @staticmethod
    def _forecast(xs: np.ndarray, ys: np.ndarray, x: float, effect: float) -> dict:
        rng = np.random.default_rng(0)
        draws = []
        for _ in range(BOOTSTRAP):
            idx = rng.integers(0, len(xs), len(xs))
            if np.unique(xs[idx]).size >= 2:
                draws.append(float(fit_pure_power_law(xs[idx], ys[idx], bootstrap=0).predict(x)))
        lo, hi = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
        beyond = x / xs.max() if x > xs.max() else xs.min() / x if x < xs.min() else 1.0
        return {"x": x, "effect": effect, "lo": float(lo), "hi": float(hi), "extrapolation": float(beyond)}

    def check(self) -> Check:
        """Sanity: how the effect moves with scale is known (an identified law over >= MIN_POINTS points)."""
        identified = bool(self.law and self.law["identified"])
        law = self.law["formula"].replace("L =", f"{self.effect} =") if identified else ""
        detail = f"{len(self.points)} points along {self.axis}: {law}" if identified else self.reason
        return Check("across scale", "sanity", identified, detail)

    def to_json(self) -> dict:
        return {
            "axis": self.axis,
            "effect_name": self.effect,
            "points": [dataclasses.asdict(p) for p in self.points],
            "law": self.law,
            "forecast": self.forecast,
            "reason": self.reason if self.forecast is None else "",
        }


def ladder_markdown(ladder: dict) -> str:
    """A `Ladder.to_json()` as a section of the results page."""
    axis, effect = ladder["axis"], ladder["effect_name"]
    lines = [f"## Scale ladder: {effect} along {axis}", "", f"| {axis} | {effect} | interval |", "|---|---|---|"]
    lines += [f"| {p['x']:g} | {p['effect']:.3g} | [{p['lo']:.3g}, {p['hi']:.3g}] |" for p in ladder["points"]]
    law, forecast = ladder["law"], ladder["forecast"]
    if law:
        lines += ["", f"Law: `{law['formula']}`, " + ("identified" if law["identified"] else ladder["reason"])]
    if forecast:
        far = f" ({forecast['extrapolation']:.3g}x past the ladder)" if forecast["extrapolation"] > 1 else ""
        lines += ["", f"Forecast at {axis} = {forecast['x']:g}: {forecast['effect']:.3g} "
                  f"[{forecast['lo']:.3g}, {forecast['hi']:.3g}]{far}"]  # fmt: skip
    else:
        lines += ["", f"No forecast: {ladder['reason']}"]
    return "\n".join(lines)


def no_ladder(axis: str, points: int = 1) -> Check:
    """Sanity, failed: the claim measured fewer than MIN_POINTS scales, so nothing says how the effect moves with
    scale."""
    detail = f"{points} point{'s' if points > 1 else ''} along {axis} (a law needs {MIN_POINTS}): how the effect moves "
    return Check("across scale", "sanity", False, detail + "with scale is unknown")
