"""Chinchilla Approach 3: L(N, D) = E + A / N**alpha + B / D**beta, fitted exactly as Hoffmann et al. (2022)
and Epoch AI's replication (Besiroglu et al. 2024), so results are comparable with the published numbers.

Objective: SUM over runs of Huber(delta=1e-3)(LSE(a - alpha log N, b - beta log D, e) - log L) with A = e^a,
B = e^b, E = e^e; L-BFGS from every start of Hoffmann's 4,500-point grid, best kept. Bootstrap resamples are
refitted warm-started from the best distinct grid solutions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._bootstrap import resample_counts, summarize
from ._format import num, param_lines
from ._lbfgs import multistart_lbfgs, x64
from ._objectives import chinchilla_objective, pad_points
from ._validate import check_bootstrap, positive_arrays

PARAMS = ("E", "A", "B", "alpha", "beta")
FLOPS_PER_PARAM_TOKEN = 6.0


def hoffmann_grid() -> np.ndarray:
    """Hoffmann's starts as (a, b, e, alpha, beta): alpha, beta in 0..2 by .5, e in -1..1 by .5, a, b in 0..25 by 5."""
    exps = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    abs_ = np.arange(0.0, 25.01, 5.0)
    return np.array([(a, b, e, al, be) for al, be, e, a, b in itertools.product(exps, exps, es, abs_, abs_)])


def _to_params(raw: np.ndarray) -> np.ndarray:
    """Rows of (a, b, e, alpha, beta) -> rows of (E, A, B, alpha, beta)."""
    raw = np.atleast_2d(raw)
    return np.stack([np.exp(raw[:, 2]), np.exp(raw[:, 0]), np.exp(raw[:, 1]), raw[:, 3], raw[:, 4]], axis=1)


@dataclass(frozen=True)
class ChinchillaFit:
    """Fitted L(N, D) = E + A/N^alpha + B/D^beta; `se`/`ci` from the bootstrap when one was run."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    n_points: int
    objective: float
    n_starts: int
    se: dict | None = None
    ci: dict | None = None
    ci_level: float | None = None
    bootstrap: int = 0

    def params(self) -> dict:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

    def predict(self, n_params: ArrayLike, n_tokens: ArrayLike) -> np.ndarray:
        n, d = np.asarray(n_params, dtype=np.float64), np.asarray(n_tokens, dtype=np.float64)
        return self.E + self.A * n**-self.alpha + self.B * d**-self.beta

    @property
    def a(self) -> float:
        """Exponent of N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, flops: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising L subject to C = 6 N D: N_opt = G (C/6)^a, D_opt = (C/6)^b / G,
        with G = (alpha A / (beta B))^(1 / (alpha + beta))."""
        c = np.asarray(flops, dtype=np.float64) / FLOPS_PER_PARAM_TOKEN
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return g * c**self.a, c**self.b / g

    def formula(self) -> str:
        return f"L = {num(self.E)} + {num(self.A)} / N^{num(self.alpha)} + {num(self.B)} / D^{num(self.beta)}"

    def __str__(self) -> str:
        head = f"{self.formula()}  ({self.n_points} points, {self.n_starts} starts"
        head += f", {self.bootstrap} bootstrap resamples)" if self.bootstrap else ")"
        return "\n".join([head, *param_lines(self.params(), self.se, self.ci, self.ci_level)])

    def to_dict(self) -> dict:
        out = {"law": "chinchilla", "formula": self.formula(), **self.params()}
        out.update(a=self.a, b=self.b, n_points=self.n_points, objective=self.objective, n_starts=self.n_starts)
        if self.bootstrap:
            out.update(bootstrap=self.bootstrap, ci_level=self.ci_level, se=dict(self.se))
            out["ci"] = {k: list(v) for k, v in self.ci.items()}
        return out


# Bootstrap refits start next to an optimum, where the short default linesearch often fails on the nearly
# piecewise-linear Huber objective; a longer one (and tighter tolerances) lets them actually move.
_REFIT = dict(max_iter=1000, gtol=1e-9, ftol=1e-12, max_linesearch_steps=10)


def _bootstrap(data, warm: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Refit `n_boot` resamples, each from every `warm` start; rows of (E, A, B, alpha, beta), best per resample."""
    log_n, log_d, log_l, w = data
    k, n, size = len(warm), int(w.sum()), len(w)
    weights = np.zeros((n_boot, size))
    weights[:, :n] = resample_counts(n, n_boot, seed)  # real points first, padding keeps weight 0
    shared = [np.broadcast_to(v, (n_boot, size)) for v in (log_n, log_d, log_l)]
    res = multistart_lbfgs(
        chinchilla_objective,
        np.tile(warm, (n_boot, 1)),
        (*shared, weights),
        data_index=np.repeat(np.arange(n_boot), k),
        **_REFIT,
    )
    values = np.where(np.isfinite(res.values), res.values, np.inf).reshape(n_boot, k)
    best = res.params.reshape(n_boot, k, -1)[np.arange(n_boot), values.argmin(axis=1)]
    return _to_params(best)


def fit_chinchilla(n_params, n_tokens, loss, *, bootstrap: int = 0, seed: int = 0, ci: float = 0.95) -> ChinchillaFit:
    """Approach 3 fit of L(N, D) over Hoffmann's full start grid; `bootstrap` > 0 adds standard errors and CIs."""
    n, d, loss = positive_arrays(5, n_params=n_params, n_tokens=n_tokens, loss=loss)
    check_bootstrap(bootstrap, ci)
    starts = hoffmann_grid()
    data = pad_points(np.log(n), np.log(d), np.log(loss), weights=np.ones_like(n))
    with x64():
        # scipy L-BFGS-B's default tolerances, as in Epoch's replication (see multistart_lbfgs).
        grid = multistart_lbfgs(chinchilla_objective, starts, data)
        best, objective = grid.best()
        # scipy's defaults can stop a start early on small, low-noise data sets; polishing the few best
        # distinct solutions with a longer linesearch only ever lowers the objective.
        polished = multistart_lbfgs(chinchilla_objective, grid.distinct_best(4), data, **_REFIT)
        p_best, p_objective = polished.best()
        if p_objective < objective:
            best, objective = p_best, p_objective
        se = intervals = None
        if bootstrap:
            samples = _bootstrap(data, grid.distinct_best(4), bootstrap, seed)
            se, intervals = summarize(dict(zip(PARAMS, samples.T, strict=True)), ci)
    values = dict(zip(PARAMS, (float(v) for v in _to_params(best)[0]), strict=True))
    return ChinchillaFit(
        **values,
        n_points=len(n),
        objective=objective,
        n_starts=len(starts),
        se=se,
        ci=intervals,
        ci_level=ci if bootstrap else None,
        bootstrap=int(bootstrap),
    )
