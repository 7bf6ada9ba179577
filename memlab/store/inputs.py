"""Checks of what a caller hands the store, done before anything is journaled or computed: each failure is a
StoreError that names the argument, what it was and what is accepted."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from memlab.errors import StoreError

from .rules import RULES


def check_rule(rule) -> str:
    if rule not in RULES:
        raise StoreError(f"rule={rule!r} is not a memory rule; accepted: {', '.join(RULES)}")
    return rule


def check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise StoreError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def check_strength(name: str, value) -> float:
    """alpha (decay) and beta (write strength) are scalars in (0, 1]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or not 0.0 < value <= 1.0
    ):
        raise StoreError(f"{name}={value!r}: expected a float in (0, 1]")
    return float(value)


def as_rows(name: str, x, widths: tuple[int, ...], rows: int | None = None) -> np.ndarray:
    """`x` as a float32 [N, w] host array with w one of `widths` (and N == rows when given)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = np.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise StoreError(
            f"{name} has dtype {dtype}; expected a real floating dtype (float32, float64, bfloat16, "
            "float16), stored as float32"
        )
    x = np.asarray(x, dtype=np.float32)
    accepted = " or ".join(str(w) for w in widths)
    if x.ndim != 2 or x.shape[1] not in widths:
        hint = " (one pair? use x[None])" if x.ndim == 1 else ""
        raise StoreError(f"{name} has shape {x.shape}; expected [N, {accepted}]{hint}")
    if rows is not None and x.shape[0] != rows:
        raise StoreError(f"{name} has {x.shape[0]} rows but keys have {rows}; one value per key")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise StoreError(f"{name} has NaN or infinite entries in {bad} of {x.shape[0]} rows")
    return x
