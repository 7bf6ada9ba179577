"""Markdown tables and number formatting for reports (no tabulate dependency)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def si(value: Any) -> str:
    """Counts people read at a glance: 1234567 → "1.23M"."""
    if is_missing(value):
        return "–"
    value = float(value)
    for scale, suffix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def sci(value: Any) -> str:
    """FLOPs and other quantities spanning many decades: 2.46e+12."""
    return "–" if is_missing(value) else f"{float(value):.3g}" if abs(float(value)) < 1e4 else f"{float(value):.2e}"


def num(value: Any, digits: int = 4) -> str:
    """A metric or a fitted parameter, with `digits` significant digits."""
    if is_missing(value):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def cell(value: Any) -> str:
    """Escape what would break a markdown table row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a markdown table: FLOP-like columns in scientific notation, the rest with `digits`
    significant digits."""
    fmt = lambda col, v: sci(v) if "flops" in str(col) or col == "params" else num(v, digits)
    return markdown_table(list(frame.columns), ([fmt(c, v) for c, v in row.items()] for _, row in frame.iterrows()))
