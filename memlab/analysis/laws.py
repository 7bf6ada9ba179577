"""Which scaling laws a sweep supports, fitted per family, with a reason whenever one is skipped.

A report must never crash because a sweep is small, still running, or varied the "wrong" axes; instead each
law that cannot be fitted says why (too few runs, one model size, N and D moved together, fit failed), and each
law that was fitted carries `Diagnostics` saying whether its points identify it (fits/diagnostics.py); only
identified laws are drawn as frontiers. Accuracy-type metrics are plotted, not fitted, unless asked for.
Model size N is the non-embedding parameter count by default, as in the scaling-law literature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .fits import fit_chinchilla, fit_isoflop, fit_power_law, fit_pure_power_law
from .fits.diagnostics import (
    DIAGNOSTIC_BOOTSTRAP,
    Diagnostics,
    diagnose_chinchilla,
    diagnose_isoflop,
    diagnose_power_law,
)

# Fewest distinct x values for a 3-parameter saturating power law to leave a residual degree of freedom.
MIN_POWER_LAW_POINTS = 4
# Chinchilla's L(N, D) has 5 parameters; ask for a few more runs, and at least 3 values of N and of D.
MIN_CHINCHILLA_POINTS = 8
MIN_CHINCHILLA_LEVELS = 3
# The sizes a law can be fitted against: non-embedding parameters (the default, as Kaplan et al. and
# Hoffmann et al. count N) or all parameters.
SIZES = ("params_non_embedding", "params")
ACCURACY_NOTE = "plotted, not fitted (accuracy is not a loss a power law describes; fit_accuracy=True fits it)"


def is_accuracy(column: str) -> bool:
    """Accuracy-type metrics (eval/accuracy, eval/exact_match, ...): bounded scores with thresholds and phase
    transitions, not losses that fall as power laws."""
    name = column.lower().rstrip("/")
    return name.endswith(("accuracy", "exact_match", "acc"))


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
    diagnostics: Diagnostics | None = None
    note: str | None = None  # how the law was chosen, when it is not the family's usual form

    @property
    def identified(self) -> bool:
        """Fitted and supported by its points: the only laws drawn as frontiers."""
        return self.fit is not None and self.diagnostics is not None and self.diagnostics.identified

    @property
    def status(self) -> str:
        """ "identified", "not identified: <reasons>" or "skipped: <reason>", for tables."""
        if self.fit is None:
            return f"skipped: {self.skipped}"
        return self.diagnostics.verdict if self.diagnostics is not None else "not diagnosed"

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
            "diagnostics": self.diagnostics.to_dict() if self.diagnostics is not None else None,
            "identified": self.identified,
        }

    @property
    def title(self) -> str:
        return {
            "compute": f"{self.y} vs compute C (FLOPs)",
            "params": f"{self.y} vs parameters N ({'non-embedding' if self.x == 'params_non_embedding' else 'all'})",
            "chinchilla": f"{self.y} vs parameters N and tokens D (Chinchilla)",
            "isoflop": "compute-optimal N and D from IsoFLOP valleys (Approach 2)",
        }[self.kind]


def loss_column(runs: pd.DataFrame) -> str:
    """The loss the laws are fitted on: validation bits per byte on text (comparable across tokenizers), else the
    final eval loss when runs have one, else the final train loss."""
    for key in ("eval/bits_per_byte", "eval/loss", "train/loss"):
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


def pareto_front(points: pd.DataFrame, x: str, y: str, *, higher: bool = False) -> pd.DataFrame:
    """Runs that no cheaper-or-equal run beats: the compute-efficient frontier a law of compute describes
    (`higher`: larger y is better, for an accuracy fitted on request)."""
    ordered = points.sort_values([x, y], ascending=[True, not higher])
    best, keep = np.inf, []
    for index, value in zip(ordered.index, -ordered[y] if higher else ordered[y], strict=True):
        if value < best:
            best = value
            keep.append(index)
    return ordered.loc[keep]


def best_per_value(points: pd.DataFrame, x: str, y: str, *, higher: bool = False) -> pd.DataFrame:
    """Each x value's best run: when other axes (tokens, lr, ...) vary too, L(N) is the envelope over them."""
    groups = points.groupby(x)[y]
    return points.loc[groups.idxmax() if higher else groups.idxmin()].sort_values(x)


def _power_law(family, kind, x, y, points, bootstrap, seed, where, diagnostic_bootstrap) -> Law:
    law = Law(family, kind, x, y, points)
    n = _distinct(points[x]) if len(points) else 0
    if n < MIN_POWER_LAW_POINTS:
        law.skipped = f"needs {MIN_POWER_LAW_POINTS} distinct values of {x} {where}, has {n}"
        return law
    try:
        xs, ys = points[x].to_numpy(float), points[y].to_numpy(float)
        law.fit = fit_power_law(xs, ys, bootstrap=bootstrap, seed=seed)
        law.diagnostics = diagnose_power_law(xs, ys, law.fit, bootstrap=diagnostic_bootstrap, seed=seed)
        if not law.identified and _only_the_floor(law.diagnostics.reasons):
            _without_floor(law, xs, ys, max(bootstrap, diagnostic_bootstrap), seed)
    except Exception as error:  # a failed fit is a finding to report, not a reason to lose the report
        law.fit, law.skipped = None, f"fit failed: {type(error).__name__}: {error}"
    return law


def _only_the_floor(reasons: list[str]) -> bool:
    """True when the one thing wrong is E's interval (and A_ref's, which trades off against E)."""
    about = lambda name: [r for r in reasons if r.startswith(f"bootstrap interval of {name} ")]
    return bool(about("E")) and len(about("E")) + len(about("A_ref")) == len(reasons)


def _without_floor(law: Law, xs, ys, bootstrap: int, seed: int) -> None:
    """The floor E is the one thing the points do not pin down (its interval reaches 0): the range is too short to
    see the loss bend. Then L = A·x^-α with E = 0 is the law the points support; it replaces the saturating fit
    when it is identified, and the report says why."""
    fit = fit_pure_power_law(xs, ys, bootstrap=bootstrap, seed=seed)
    diagnostics = diagnose_power_law(xs, ys, fit, seed=seed)
    if diagnostics.identified:
        floor = law.diagnostics.reasons[0]
        law.fit, law.diagnostics = fit, diagnostics
        law.note = f"no floor fitted: the saturating law's {floor.removeprefix('bootstrap ')}"


def _chinchilla(family, size, y, points, bootstrap, seed) -> Law:
    law = Law(family, "chinchilla", f"{size}, tokens", y, points)
    n_levels, d_levels = (_distinct(points[c]) if len(points) else 0 for c in (size, "tokens"))
    reason = None
    if len(points) < MIN_CHINCHILLA_POINTS:
        reason = f"needs {MIN_CHINCHILLA_POINTS} completed runs, has {len(points)}"
    elif min(n_levels, d_levels) < MIN_CHINCHILLA_LEVELS:
        reason = (
            f"needs {MIN_CHINCHILLA_LEVELS} distinct values of both {size} and tokens, has {n_levels} and {d_levels}"
        )
    elif abs(np.corrcoef(np.log(points[size].astype(float)), np.log(points["tokens"].astype(float)))[0, 1]) > 0.98:
        reason = f"{size} and tokens moved together (no independent variation of N and D)"
    if reason:
        law.skipped = reason
        return law
    try:
        n, d, loss = (points[c].to_numpy(float) for c in (size, "tokens", y))
        law.fit = fit_chinchilla(n, d, loss, bootstrap=bootstrap, seed=seed)
        law.diagnostics = diagnose_chinchilla(n, d, loss, law.fit)
    except Exception as error:
        law.fit, law.skipped = None, f"fit failed: {type(error).__name__}: {error}"
    return law


def _isoflop(family, size, y, points, seed, diagnostic_bootstrap) -> Law:
    """Approach 2 needs runs sharing FLOP budgets at several sizes (an IsoFLOP sweep); other grids are skipped
    with the reason fit_isoflop gives."""
    law = Law(family, "isoflop", f"{size}, tokens, flops", y, points)
    try:
        law.fit = fit_isoflop(*(points[c].to_numpy(float) for c in (size, "tokens", y, "flops")))
        law.diagnostics = diagnose_isoflop(law.fit, bootstrap=diagnostic_bootstrap, seed=seed)
    except Exception as error:
        law.fit = None
        law.skipped = str(error) if isinstance(error, ValueError) else f"fit failed: {type(error).__name__}: {error}"
    return law


KINDS = ("compute", "params", "chinchilla", "isoflop")


def fit_laws(
    runs: pd.DataFrame,
    *,
    loss: str | None = None,
    size: str = "params_non_embedding",
    fit_accuracy: bool = False,
    bootstrap: int = 200,
    chinchilla_bootstrap: int = 0,
    diagnostic_bootstrap: int = DIAGNOSTIC_BOOTSTRAP,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
) -> list[Law]:
    """Per family: loss vs compute (on the Pareto front), loss vs model size `size` (when it varied; each
    size's best run), Chinchilla L(N, D) (when N and D varied independently) and IsoFLOP (when runs share
    FLOP budgets across sizes), each with its `Diagnostics`. `kinds` picks a subset (Chinchilla's
    4,500-start fit is the costly one). A fit without bootstrap intervals gets `diagnostic_bootstrap`
    resamples for its diagnosis (Chinchilla only gets `chinchilla_bootstrap`'s). An accuracy-type `loss` is
    not fitted (each law says so) unless `fit_accuracy`."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown law kinds {unknown}; choose from {list(KINDS)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    loss = loss or loss_column(runs)
    laws: list[Law] = []
    if runs.empty or "family" not in runs:
        return laws
    skip_accuracy = is_accuracy(loss) and not fit_accuracy
    for family, group in runs.groupby(runs["family"].fillna("?").astype(str), sort=True):
        if "compute" in kinds:
            compute = usable(group, ["flops", loss])
            if skip_accuracy:
                laws.append(Law(family, "compute", "flops", loss, compute, skipped=ACCURACY_NOTE))
            else:
                front = pareto_front(compute, "flops", loss, higher=is_accuracy(loss)) if len(compute) else compute
                where = "on the compute frontier of completed runs"
                laws.append(
                    _power_law(family, "compute", "flops", loss, front, bootstrap, seed, where, diagnostic_bootstrap)
                )
        if size not in group or group[size].dropna().nunique() < 2:
            continue  # model size fixed (or not recorded): no law in N (the report says so)
        if skip_accuracy:
            laws += [
                Law(family, k, size, loss, group.iloc[0:0], skipped=ACCURACY_NOTE) for k in KINDS[1:] if k in kinds
            ]
            continue
        if "params" in kinds:
            sized = usable(group, [size, loss])
            best = best_per_value(sized, size, loss, higher=is_accuracy(loss)) if len(sized) else sized
            where = "among completed runs"
            laws.append(_power_law(family, "params", size, loss, best, bootstrap, seed, where, diagnostic_bootstrap))
        if "chinchilla" in kinds:
            points = usable(group, [size, "tokens", loss])
            laws.append(_chinchilla(family, size, loss, points, chinchilla_bootstrap, seed))
        if "isoflop" in kinds:
            points = usable(group, [size, "tokens", "flops", loss])
            laws.append(_isoflop(family, size, loss, points, seed, diagnostic_bootstrap))
    return laws


def diagnostics_table(laws: list[Law]) -> pd.DataFrame:
    """One row per law: how many points for how many parameters, R² and residual RMS in log space, and
    whether the law is identified (or why not, or why it was skipped). The report and notebook show it."""
    rows = []
    for law in laws:
        d = law.diagnostics
        why = "" if law.identified else law.status.split(": ", 1)[-1]
        rows.append(
            {
                "family": law.family,
                "law": law.kind,
                "x": law.x,
                "y": law.y,
                "points": d.n_points if d else len(law.points),
                "params": d.n_params if d else None,
                "R² (log)": d.r2_log if d else None,
                "residual RMS (log)": d.residual_rms if d else None,
                "identified": law.identified,
                "why not": law.status if law.fit is None else why,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "family",
            "law",
            "x",
            "y",
            "points",
            "params",
            "R² (log)",
            "residual RMS (log)",
            "identified",
            "why not",
        ],
    )
