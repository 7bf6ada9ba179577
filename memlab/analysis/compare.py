"""The compute-optimal reading of a sweep: which family reaches a lower loss at a given training budget, and how
much compute the other would need to match it, read off the families' identified compute frontiers.

Only identified laws are compared, and only over the compute both families actually covered: a frontier says
nothing outside the runs it was fitted on.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .laws import Law


def compute_for_loss(fit, loss: float) -> float:
    """Training FLOPs at which a frontier L = E + A·C^-α reaches `loss`; inf when it never gets that low."""
    if loss <= fit.E:
        return math.inf
    return float(((loss - fit.E) / fit.A) ** (-1.0 / fit.alpha))


def family_comparison(laws: list[Law], budgets: int = 3) -> pd.DataFrame:
    """At `budgets` log-spaced compute values spanning the range every identified compute frontier covers: each
    family's frontier loss, the winner, and the compute multiplier the others need to match the winner's loss.
    Empty when fewer than two families have an identified compute law or their ranges do not overlap."""
    fronts = {law.family: law for law in laws if law.kind == "compute" and law.identified}
    if len(fronts) < 2:
        return pd.DataFrame()
    lo = max(float(law.points["flops"].min()) for law in fronts.values())
    hi = min(float(law.points["flops"].max()) for law in fronts.values())
    if not lo < hi:
        return pd.DataFrame()
    rows = []
    for budget in np.geomspace(lo, hi, budgets):
        losses = {family: float(law.fit.predict(budget)) for family, law in fronts.items()}
        winner = min(losses, key=losses.get)
        row = {"budget_flops": budget, "winner": winner}
        for family, law in fronts.items():
            row[f"{family} loss"] = losses[family]
            row[f"{family} compute multiplier"] = compute_for_loss(law.fit, losses[winner]) / budget
        rows.append(row)
    return pd.DataFrame(rows)
