"""IsoFLOP analysis (Hoffmann et al. 2022, Approach 2).

Runs sharing a compute budget trace a valley of loss against model size; a parabola in log N per budget
locates its bottom N_opt(C), and straight lines in log-log through those bottoms give N_opt ∝ C^a and
D_opt ∝ C^b. It needs no functional form for the loss, which makes it a cross-check on Approach 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ._format import num
from ._validate import positive_arrays

TABLE_COLUMNS = ["flops", "n_runs", "n_opt", "d_opt", "loss_opt", "curvature", "extrapolated"]


@dataclass(frozen=True)
class IsoFLOPFit:
    """N_opt = n_coef * C**a and D_opt = d_coef * C**b, plus the per-budget table they were fitted on."""

    a: float
    b: float
    n_coef: float
    d_coef: float
    table: pd.DataFrame

    def n_opt(self, flops: ArrayLike) -> np.ndarray:
        return self.n_coef * np.asarray(flops, dtype=np.float64) ** self.a

    def d_opt(self, flops: ArrayLike) -> np.ndarray:
        return self.d_coef * np.asarray(flops, dtype=np.float64) ** self.b

    def formula(self) -> str:
        return f"N_opt = {num(self.n_coef)} · C^{num(self.a)},  D_opt = {num(self.d_coef)} · C^{num(self.b)}"

    def __str__(self) -> str:
        return f"IsoFLOP ({len(self.table)} budgets): {self.formula()}"

    def to_dict(self) -> dict:
        table = self.table.astype(object).where(self.table.notna(), None)
        return {
            "law": "isoflop",
            "formula": self.formula(),
            "a": self.a,
            "b": self.b,
            "n_coef": self.n_coef,
            "d_coef": self.d_coef,
            "budgets": table.to_dict(orient="records"),
        }


def group_budgets(flops: np.ndarray, rtol: float = 0.1) -> np.ndarray:
    """Label runs whose FLOPs agree within `rtol` (consecutive in sorted order) as one budget."""
    order = np.argsort(flops)
    log_f = np.log(flops[order])
    new_group = np.concatenate([[0], (np.diff(log_f) > np.log1p(rtol)).astype(int)])
    labels = np.empty(len(flops), dtype=int)
    labels[order] = np.cumsum(new_group)
    return labels


def _assign_budgets(flops: np.ndarray, budgets) -> tuple[np.ndarray, np.ndarray]:
    """(label per run, nominal FLOPs per label): nearest given budget in log space, or automatic grouping."""
    if budgets is None:
        labels = group_budgets(flops)
        nominal = np.array([np.exp(np.mean(np.log(flops[labels == g]))) for g in range(labels.max() + 1)])
        return labels, nominal
    (nominal,) = positive_arrays(1, budgets=budgets)
    labels = np.abs(np.log(flops)[:, None] - np.log(nominal)[None, :]).argmin(axis=1)
    return labels, nominal


def _budget_row(c, log_n, log_d, loss) -> dict:
    """Parabola loss(log N) for one budget; D_opt from the run's own log D vs log N line at N_opt."""
    row = dict(flops=c, n_runs=len(loss), n_opt=np.nan, d_opt=np.nan, loss_opt=np.nan, curvature=np.nan)
    row["extrapolated"] = False
    if np.unique(log_n).size < 3:
        return row
    c2, c1, c0 = np.polyfit(log_n, loss, 2)
    row["curvature"] = c2
    if c2 <= 0:
        return row
    x_opt = -c1 / (2 * c2)
    slope, icept = np.polyfit(log_n, log_d, 1)
    row.update(n_opt=np.exp(x_opt), d_opt=np.exp(icept + slope * x_opt), loss_opt=c0 - c1**2 / (4 * c2))
    row["extrapolated"] = bool(x_opt < log_n.min() or x_opt > log_n.max())
    return row


def fit_isoflop(n_params, n_tokens, loss, flops, *, budgets=None) -> IsoFLOPFit:
    """Approach 2: per-budget parabola minima, then N_opt ∝ C^a and D_opt ∝ C^b by least squares in log-log.

    `budgets` optionally lists the nominal FLOP budgets; each run joins the nearest one. Otherwise runs whose
    FLOPs agree within 10% are grouped. Budgets with fewer than 3 model sizes or a concave parabola get NaN
    optima in the table and are left out of the exponent fit.
    """
    n, d, loss, flops = positive_arrays(3, n_params=n_params, n_tokens=n_tokens, loss=loss, flops=flops)
    labels, nominal = _assign_budgets(flops, budgets)
    rows = []
    for g in np.unique(labels):
        m = labels == g
        rows.append(_budget_row(float(nominal[g]), np.log(n[m]), np.log(d[m]), loss[m]))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS).sort_values("flops", ignore_index=True)
    ok = table["n_opt"].notna().to_numpy()
    if ok.sum() < 2:
        raise ValueError(
            f"flops: need at least 2 budgets with >= 3 model sizes and a convex loss valley, found {ok.sum()}"
        )
    log_c = np.log(table["flops"].to_numpy()[ok])
    a, log_kn = np.polyfit(log_c, np.log(table["n_opt"].to_numpy()[ok]), 1)
    b, log_kd = np.polyfit(log_c, np.log(table["d_opt"].to_numpy()[ok]), 1)
    return IsoFLOPFit(a=float(a), b=float(b), n_coef=float(np.exp(log_kn)), d_coef=float(np.exp(log_kd)), table=table)
