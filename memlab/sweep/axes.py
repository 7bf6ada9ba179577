"""Point builders for sweep files. Each returns a list of dicts (dotted config key or @label -> value)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence


def grid(axes: dict[str, Sequence]) -> list[dict]:
    """Every combination of the axes' values (the first axis varies slowest)."""
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(axes[k] for k in keys))]


def zipped(axes: dict[str, Sequence]) -> list[dict]:
    """Axes advanced together: the i-th point takes the i-th value of every axis (lengths must match)."""
    lengths = {k: len(v) for k, v in axes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zipped axes need equal lengths, got {lengths}")
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in zip(*(axes[k] for k in keys), strict=True)]


def points(*items: dict) -> list[dict]:
    """Explicit points."""
    return [dict(item) for item in items]


def product(*groups: Iterable[dict]) -> list[dict]:
    """Cartesian product of point lists, merging dicts (later groups win on a shared key)."""
    out = [{}]
    for group in groups:
        out = [{**a, **b} for a in out for b in group]
    return out


def chain(*groups: Iterable[dict]) -> list[dict]:
    """Concatenate point lists (e.g. two families with different axes)."""
    return [dict(p) for group in groups for p in group]


def ladder(
    rungs: Sequence[tuple[int, int]],
    tokens: Sequence[float] | float,
    *,
    width: str = "model.d_model",
    depth: str = "model.num_layers",
) -> list[dict]:
    """A scale ladder: model sizes (width, depth) crossed with training-token budgets.

    The budget goes in the `@tokens` label; the sweep turns it into `train.steps` from the batch size and the
    task's tokens per example, so every rung sees exactly the tokens it was promised.
    """
    budgets = [tokens] if isinstance(tokens, (int, float)) else list(tokens)
    return [{width: w, depth: d, "@tokens": t} for (w, d) in rungs for t in budgets]
