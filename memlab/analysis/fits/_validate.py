"""Input checks shared by the fits: fail early with the argument's name instead of a NaN fit later."""

from __future__ import annotations

import numpy as np


def positive_array(name: str, values) -> np.ndarray:
    """`values` as a 1-D float64 array of finite, strictly positive numbers (the fits work in log space)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} contains NaN or inf ({bad.sum()} values, first at index {i})")
    if (arr <= 0).any():
        i = int(np.flatnonzero(arr <= 0)[0])
        raise ValueError(f"{name} must be > 0 everywhere (got {arr[i]!r} at index {i})")
    return arr


def positive_arrays(min_points: int, **named) -> list[np.ndarray]:
    """Validate several same-length arrays (in keyword order); raise naming the first offending argument."""
    arrays = {name: positive_array(name, v) for name, v in named.items()}
    (first, ref), *rest = arrays.items()
    for name, arr in rest:
        if len(arr) != len(ref):
            raise ValueError(f"{name} has {len(arr)} values but {first} has {len(ref)}; lengths must match")
    if len(ref) < min_points:
        raise ValueError(f"{first} has {len(ref)} points; this fit needs at least {min_points}")
    return list(arrays.values())


def check_bootstrap(bootstrap: int, ci: float = 0.95) -> None:
    if int(bootstrap) != bootstrap or bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"bootstrap must be 0 (off) or an integer >= 2, got {bootstrap!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
