"""Number formatting shared by the fit results' text and markdown summaries."""

from __future__ import annotations


def num(x: float, digits: int = 4) -> str:
    """Compact significant-digit formatting (1.817, 477.8, 2.1e+04)."""
    return f"{x:.{digits}g}"


def param_lines(values: dict, se: dict | None, ci: dict | None, level: float | None) -> list[str]:
    """One line per parameter: value, then (± se) and [lo, hi] when a bootstrap was run."""
    lines = []
    for name, value in values.items():
        line = f"  {name:<6} = {num(value)}"
        if se:
            line += f" ± {num(se[name], 3)}"
        if ci:
            lo, hi = ci[name]
            line += f"  [{num(lo)}, {num(hi)}] ({level:.0%} CI)"
        lines.append(line)
    return lines
