"""Saturating power law L = E + A * x**-alpha, fitted robustly in log space with bootstrap intervals.

Used for one-axis laws (loss against parameters, tokens or compute). The fit mirrors the Chinchilla recipe:
log L = LSE(a - alpha * log x, e) with a Huber loss on log L, so E = exp(e) >= 0 and a few outlying runs do not
drag the law; x is centred on its geometric mean so one start grid works for any scale of x.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._bootstrap import resample_counts, summarize
from ._format import num, param_lines
from ._lbfgs import multistart_lbfgs, x64
from ._objectives import HUBER_DELTA, pad_points, power_law_objective
from ._validate import check_bootstrap, positive_arrays

PARAMS = ("E", "A", "alpha")
# Few starts, so converge well past scipy's defaults; the longer linesearch helps warm-started bootstrap refits.
_TOLS = dict(max_iter=1000, gtol=1e-10, ftol=1e-13, max_linesearch_steps=10)


@dataclass(frozen=True)
class PowerLawFit:
    """Fitted L = E + A * x**-alpha; `se`/`ci` hold bootstrap standard errors and percentile intervals."""

    E: float
    A: float
    alpha: float
    n_points: int
    objective: float
    se: dict | None = None
    ci: dict | None = None
    ci_level: float | None = None
    bootstrap: int = 0
    # Geometric mean of the fitted x. A is the law's value at x = 1, often decades outside the data, so its
    # interval is inflated by alpha's; A_ref = A·x_ref^-alpha (the reducible loss mid-data) is what the points
    # pin down, and `ci["A_ref"]` is its interval (judged by the diagnostics in place of A's).
    x_ref: float | None = None
    floor: bool = True  # False: E fixed at 0 (`fit_pure_power_law`), two free parameters

    def predict(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self.E + self.A * x**-self.alpha

    def params(self) -> dict:
        return {"E": self.E, "A": self.A, "alpha": self.alpha}

    def formula(self, var: str = "x") -> str:
        if not self.floor:
            return f"L = {num(self.A)} · {var}^-{num(self.alpha)}"
        return f"L = {num(self.E)} + {num(self.A)} · {var}^-{num(self.alpha)}"

    def __str__(self) -> str:
        head = f"{self.formula()}  ({self.n_points} points"
        head += f", {self.bootstrap} bootstrap resamples)" if self.bootstrap else ")"
        return "\n".join([head, *param_lines(self.params(), self.se, self.ci, self.ci_level)])

    def to_dict(self) -> dict:
        law = "power_law" if self.floor else "pure_power_law"
        out = {"law": law, "formula": self.formula(), **self.params(), "n_points": self.n_points}
        out["objective"] = self.objective
        if self.bootstrap:
            out.update(bootstrap=self.bootstrap, ci_level=self.ci_level, se=dict(self.se))
            out["ci"] = {k: list(v) for k, v in self.ci.items()}
        out["x_ref"] = self.x_ref
        return out


def fit_pure_power_law(
    x: ArrayLike, y: ArrayLike, *, bootstrap: int = 200, seed: int = 0, ci: float = 0.95
) -> PowerLawFit:
    """Fit y = A * x**-alpha (no floor): least squares on log y, exact in one solve; bootstrap resamples of the
    points give `se` and `ci` for A, alpha and A_ref (the law at the data's centre)."""
    x, y = positive_arrays(2, x=x, y=y)
    check_bootstrap(bootstrap, ci)
    if np.unique(x).size < 2:
        raise ValueError("x needs at least 2 distinct values to fit A and alpha")
    log_x0 = float(np.mean(np.log(x)))

    def solve(idx: np.ndarray) -> tuple[float, float, float]:
        slope, intercept = np.polyfit(np.log(x[idx]) - log_x0, np.log(y[idx]), 1)
        return float(np.exp(intercept - slope * log_x0)), float(-slope), float(np.exp(intercept))

    A, alpha, a_ref = solve(np.arange(len(x)))
    residual = np.log(y) - np.log(A * x**-alpha)
    se = intervals = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = [rng.integers(0, len(x), len(x)) for _ in range(bootstrap)]
        samples = np.array([solve(d) for d in draws if np.unique(x[d]).size >= 2])
        lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
        names = ("A", "alpha", "A_ref")
        se = {n: float(samples[:, i].std(ddof=1)) for i, n in enumerate(names)}
        intervals = {n: tuple(float(v) for v in np.percentile(samples[:, i], [lo, hi])) for i, n in enumerate(names)}
    return PowerLawFit(
        E=0.0,
        A=A,
        alpha=alpha,
        n_points=len(x),
        objective=float(np.sum(residual**2)),
        se=se,
        ci=intervals,
        ci_level=ci if bootstrap else None,
        bootstrap=bootstrap,
        x_ref=float(np.exp(log_x0)),
        floor=False,
    )


def _start_grid(log_y: np.ndarray) -> np.ndarray:
    """Starts for (a, e, alpha) on centred x: E a fraction of min(y), A around the scale of y."""
    y_min, y_mid = np.exp(log_y.min()), np.exp(np.median(log_y))
    e0 = np.log(y_min * np.array([1e-3, 0.3, 0.6, 0.9, 0.99]))
    a0 = np.log(y_mid) + np.array([-6.0, -3.0, -1.0, 0.0, 1.0])
    alpha0 = np.array([0.05, 0.2, 0.5, 1.0, 2.0])
    return np.array(list(itertools.product(a0, e0, alpha0)))


def _to_params(raw: np.ndarray, log_x0: float) -> np.ndarray:
    """(a, e, alpha) on centred x -> (E, A, alpha) in the caller's units, row-wise."""
    raw = np.atleast_2d(raw)
    a, e, alpha = raw[:, 0], raw[:, 1], raw[:, 2]
    return np.stack([np.exp(e), np.exp(a + alpha * log_x0), alpha], axis=1)


def fit_power_law(
    x: ArrayLike,
    y: ArrayLike,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    huber_delta: float = HUBER_DELTA,
) -> PowerLawFit:
    """Fit y = E + A * x**-alpha (E >= 0) from a grid of starts; bootstrap resamples give `se` and `ci`."""
    x, y = positive_arrays(4, x=x, y=y)
    check_bootstrap(bootstrap, ci)
    if np.unique(x).size < 3:
        raise ValueError("x needs at least 3 distinct values to fit E, A and alpha")
    log_x0 = float(np.mean(np.log(x)))
    u, log_y = np.log(x) - log_x0, np.log(y)
    starts = _start_grid(log_y)
    with x64():
        u, log_y, w = pad_points(u, log_y, weights=np.ones_like(u))
        data = (u, log_y, w, np.float64(huber_delta))
        grid = multistart_lbfgs(power_law_objective, starts, data, **_TOLS)
        best, objective = grid.best()
        fit = dict(zip(PARAMS, _to_params(best, log_x0)[0], strict=True))
        se = intervals = None
        if bootstrap:
            # Warm-start every resample from the few best distinct minima; keep each resample's best.
            warm = grid.distinct_best(4)
            k, n, size = len(warm), len(x), len(u)
            weights = np.zeros((bootstrap, size))
            weights[:, :n] = resample_counts(n, bootstrap, seed)  # real points first, padding keeps weight 0
            boot_data = (
                np.broadcast_to(u, (bootstrap, size)),
                np.broadcast_to(log_y, (bootstrap, size)),
                weights,
                np.full(bootstrap, huber_delta),
            )
            res = multistart_lbfgs(
                power_law_objective,
                np.tile(warm, (bootstrap, 1)),
                boot_data,
                data_index=np.repeat(np.arange(bootstrap), k),
                **_TOLS,
            )
            values = np.where(np.isfinite(res.values), res.values, np.inf).reshape(bootstrap, k)
            pick = res.params.reshape(bootstrap, k, -1)[np.arange(bootstrap), values.argmin(axis=1)]
            samples = dict(zip(PARAMS, _to_params(pick, log_x0).T, strict=True))
            samples["A_ref"] = np.exp(pick[:, 0])  # a is log A at the centre of x
            se, intervals = summarize(samples, ci)
    return PowerLawFit(
        **{k: float(v) for k, v in fit.items()},
        n_points=len(x),
        objective=objective,
        se=se,
        ci=intervals,
        ci_level=ci if bootstrap else None,
        bootstrap=int(bootstrap),
        x_ref=float(np.exp(log_x0)),
    )
