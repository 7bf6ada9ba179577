"""Nonparametric bootstrap as point weights.

Resampling n points with replacement is the same as weighting each point by how often it was drawn, so every
resample has the same array shapes and all refits can run as one batched L-BFGS call.
"""

from __future__ import annotations

import numpy as np


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) float array: how many times each point appears in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def summarize(samples: dict[str, np.ndarray], ci: float) -> tuple[dict, dict]:
    """Standard errors (sample std) and percentile intervals of each parameter's bootstrap distribution."""
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    se, intervals = {}, {}
    for name, values in samples.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        se[name] = float(np.std(values, ddof=1))
        lo, hi = np.percentile(values, [lo_q, hi_q])
        intervals[name] = (float(lo), float(hi))
    return se, intervals
