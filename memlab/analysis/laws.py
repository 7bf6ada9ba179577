"""Which scaling laws a sweep supports, fitted per family, with a reason whenever one is skipped.

A report must never crash because a sweep is small, still running, or varied the "wrong" axes; instead each
law that cannot be fitted says why (too few runs, one model size, N and D moved together, fit failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .fits import fit_chinchilla, fit_isoflop, fit_power_law

# Fewest distinct x values for a 3-parameter saturating power law to leave a residual degree of freedom.
MIN_POWER_LAW_POINTS = 4
# Chinchilla's L(N, D) has 5 parameters; ask for a few more runs, and at least 3 values of N and of D.
MIN_CHINCHILLA_POINTS = 8
MIN_CHINCHILLA_LEVELS = 3


@dataclass
class Law:
    """One fitted (or skipped) law for one family; `fit` is None exactly when `skipped` says why."""

    family: str
    kind: str  # "compute" | "params" | "chinchilla" | "isoflop"
    x: str  # the column(s) on the x side, for labels
    y: str  # the loss column
    points: pd.DataFrame  # the runs the law was fitted on (or would have been)
    fit: Any = None
    skipped: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready record (laws.json beside the report) for scripts that compare sweeps."""
        return {
            "family": self.family,
            "kind": self.kind,
            "x": self.x,
            "y": self.y,
            "runs": list(self.points["run"]) if "run" in self.points else [],
            "fit": self.fit.to_dict() if self.fit is not None else None,
            "skipped": self.skipped,
        }

    @property
    def title(self) -> str:
        return {
            "compute": f"{self.y} vs compute C (FLOPs)",
            "params": f"{self.y} vs parameters N",
            "chinchilla": f"{self.y} vs parameters N and tokens D (Chinchilla)",
            "isoflop": "compute-optimal N and D from IsoFLOP valleys (Approach 2)",
        }[self.kind]


def loss_column(runs: pd.DataFrame) -> str:
    """The loss the laws are fitted on: final eval loss when runs have one, else the final train loss."""
    for key in ("eval/loss", "train/loss"):
        if key in runs and runs[key].notna().any():
            return key
    return "eval/loss"


def usable(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Completed runs whose `columns` are all finite and positive (a law lives in log space)."""
    if runs.empty or any(c not in runs for c in columns):
        return runs.iloc[0:0]
    done = runs[runs["status"] == "completed"]
    values = done[columns].apply(pd.to_numeric, errors="coerce")
    ok = np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)
    return done[ok]


def _distinct(values: pd.Series) -> int:
    """Distinct values up to 0.1% relative difference (FLOP counts of equal runs can differ in rounding)."""
    return int(np.unique(np.round(np.log10(values.astype(float)), 3)).size)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Runs that no cheaper-or-equal run beats: the compute-efficient frontier a law of compute describes."""
    ordered = points.sort_values([x, y])
    best, keep = np.inf, []
    for index, value in zip(ordered.index, ordered[y], strict=True):
        if value < best:
            best = value
            keep.append(index)
    return ordered.loc[keep]


def best_per_value(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Each x value's best run: when other axes (tokens, lr, ...) vary too, L(N) is the envelope over them."""
    return points.loc[points.groupby(x)[y].idxmin()].sort_values(x)


def _power_law(family, kind, x, y, points, bootstrap, seed, where) -> Law:
    law = Law(family, kind, x, y, points)
    n = _distinct(points[x]) if len(points) else 0
    if n < MIN_POWER_LAW_POINTS:
        law.skipped = f"needs {MIN_POWER_LAW_POINTS} distinct values of {x} {where}, has {n}"
        return law
    try:
        law.fit = fit_power_law(points[x].to_numpy(float), points[y].to_numpy(float), bootstrap=bootstrap, seed=seed)
    except Exception as error:  # a failed fit is a finding to report, not a reason to lose the report
        law.skipped = f"fit failed: {type(error).__name__}: {error}"
    return law


def _chinchilla(family, y, points, bootstrap, seed) -> Law:
    law = Law(family, "chinchilla", "params, tokens", y, points)
    n_levels, d_levels = (_distinct(points[c]) if len(points) else 0 for c in ("params", "tokens"))
    reason = None
    if len(points) < MIN_CHINCHILLA_POINTS:
        reason = f"needs {MIN_CHINCHILLA_POINTS} completed runs, has {len(points)}"
    elif min(n_levels, d_levels) < MIN_CHINCHILLA_LEVELS:
        reason = (
            f"needs {MIN_CHINCHILLA_LEVELS} distinct values of both params and tokens, has {n_levels} and {d_levels}"
        )
    elif abs(np.corrcoef(np.log(points["params"].astype(float)), np.log(points["tokens"].astype(float)))[0, 1]) > 0.98:
        reason = "params and tokens moved together (no independent variation of N and D)"
    if reason:
        law.skipped = reason
        return law
    try:
        law.fit = fit_chinchilla(
            points["params"].to_numpy(float),
            points["tokens"].to_numpy(float),
            points[y].to_numpy(float),
            bootstrap=bootstrap,
            seed=seed,
        )
    except Exception as error:
        law.skipped = f"fit failed: {type(error).__name__}: {error}"
    return law


def _isoflop(family, y, points) -> Law:
    """Approach 2 needs runs sharing FLOP budgets at several sizes (an IsoFLOP sweep); other grids are skipped
    with the reason fit_isoflop gives."""
    law = Law(family, "isoflop", "params, tokens, flops", y, points)
    try:
        law.fit = fit_isoflop(*(points[c].to_numpy(float) for c in ("params", "tokens", y, "flops")))
    except Exception as error:
        law.skipped = str(error) if isinstance(error, ValueError) else f"fit failed: {type(error).__name__}: {error}"
    return law


KINDS = ("compute", "params", "chinchilla", "isoflop")


def fit_laws(
    runs: pd.DataFrame,
    *,
    loss: str | None = None,
    bootstrap: int = 200,
    chinchilla_bootstrap: int = 0,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
) -> list[Law]:
    """Per family: loss vs compute (on the Pareto front), loss vs params (when model size varied; each
    size's best run), Chinchilla L(N, D) (when N and D varied independently) and IsoFLOP (when runs share
    FLOP budgets across sizes). `kinds` picks a subset (Chinchilla's 4,500-start fit is the costly one)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown law kinds {unknown}; choose from {list(KINDS)}")
    loss = loss or loss_column(runs)
    laws: list[Law] = []
    if runs.empty or "family" not in runs:
        return laws
    for family, group in runs.groupby(runs["family"].fillna("?").astype(str), sort=True):
        if "compute" in kinds:
            compute = usable(group, ["flops", loss])
            front = pareto_front(compute, "flops", loss) if len(compute) else compute
            laws.append(
                _power_law(
                    family,
                    "compute",
                    "flops",
                    loss,
                    front,
                    bootstrap,
                    seed,
                    "on the compute frontier of completed runs",
                )
            )
        if "params" not in group or group["params"].dropna().nunique() < 2:
            continue  # model size fixed: no law in N (the report says so)
        if "params" in kinds:
            sized = usable(group, ["params", loss])
            best = best_per_value(sized, "params", loss) if len(sized) else sized
            laws.append(_power_law(family, "params", "params", loss, best, bootstrap, seed, "among completed runs"))
        if "chinchilla" in kinds:
            laws.append(
                _chinchilla(family, loss, usable(group, ["params", "tokens", loss]), chinchilla_bootstrap, seed)
            )
        if "isoflop" in kinds:
            laws.append(_isoflop(family, loss, usable(group, ["params", "tokens", "flops", loss])))
    return laws
