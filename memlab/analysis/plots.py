"""Report figures: curves against compute with fitted frontiers, laws in N, and the final metric against
each axis the sweep varied. Every figure has a title, axis labels with units, a legend per family and a grid,
so it can be read without the report text around it.

`draw_*` functions draw on an Axes the caller owns (a notebook's inline figure); `plot_*` wrap them into a
PNG. PNGs are rendered with an Agg canvas on a bare `Figure`, so writing a report neither needs a display nor
switches the backend of the notebook or program that imported this module."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .axes import REPLICATE_KEYS, varies_within_family
from .curves import CurvesAccessor
from .laws import Law

LABELS = {
    "eval/loss": "final eval loss (nats/token)",
    "train/loss": "final train loss (nats/token)",
    "eval/accuracy": "final eval accuracy (fraction correct)",
    "flops": "training compute C (FLOPs)",
    "params": "parameters N (all)",
    "params_non_embedding": "non-embedding parameters N",
    "tokens": "training tokens D",
}
# Above this many lines a legend stops helping; axis plots then show families only.
MAX_LEGEND_GROUPS = 10


def label(key: str) -> str:
    return LABELS.get(key, key)


def slug(text: str) -> str:
    """A file-name-safe version of a metric or axis name ("eval/loss" → "eval_loss")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def family_colors(families) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10"]
    return {f: cmap(i % 10) for i, f in enumerate(sorted(set(map(str, families))))}


def _plain_log_y(ax) -> None:
    """Log-scale y with plain tick labels (3, 4, 5 rather than 3×10⁰): losses span less than a decade. Minor
    ticks are labelled only as densely as the span leaves room for (all of 2..9 in half a decade, 2, 3 and 5
    up to ~1.3 decades, none beyond), so labels never run into each other."""
    lo, hi = ax.get_ylim()
    span = np.log10(hi / max(lo, 1e-12))
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    if span < 0.5:
        ax.yaxis.set_minor_formatter(plain)
    elif span < 1.3:
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _leading_digit(v) in (2, 3, 5) else ""))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _leading_digit(value: float) -> int:
    return int(round(value / 10 ** np.floor(np.log10(value) + 1e-9), 6)) if value > 0 else 0


def _finish(ax, title: str) -> bool:
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.12)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", loc="best", framealpha=0.85)
    return True


def save_png(path: Path, draw: Callable[..., bool], *args) -> Path | None:
    """Draw with `draw(ax, *args)` on a fresh 7.5×4.8 in figure and write it; None if `draw` had nothing."""
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    if not draw(fig.add_subplot(), *args):
        return None
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _law_grid(points: pd.Series) -> np.ndarray:
    lo, hi = float(points.min()), float(points.max())
    return np.geomspace(lo / 1.5, hi * 1.5, 100)


def draw_vs_compute(ax, runs: pd.DataFrame, key: str, laws: list[Law]) -> bool:
    """Each run's `key` curve against cumulative FLOPs (thin), final values (dots) and, for a loss, each
    family's fitted frontier L(C) (dashed). Log-log for a loss, log-x for accuracy."""
    colors = family_colors(runs["family"].fillna("?"))
    for family, group in runs.groupby(runs["family"].fillna("?").astype(str), sort=True):
        color = colors[family]
        for _, row in group.iterrows():
            try:
                curve = CurvesAccessor.of(row)
            except (ValueError, OSError):
                continue
            if key in curve and "flops" in curve:
                points = curve[["flops", key]].dropna()
                points = points[points["flops"] > 0]
                ax.plot(points["flops"], points[key], color=color, alpha=0.35, linewidth=1)
        final = group[group["status"] == "completed"] if "status" in group else group
        if key in final and "flops" in final:
            final = final[["flops", key]].apply(pd.to_numeric, errors="coerce").dropna()
            ax.scatter(final["flops"], final[key], color=color, s=22, zorder=3, label=f"{family} ({len(group)} runs)")
    draw_laws(ax, [law for law in laws if law.kind == "compute" and law.y == key], colors, "frontier")
    ax.set_xscale("log")
    if "loss" in key:
        ax.set_yscale("log")
        _plain_log_y(ax)
    ax.set_xlabel("cumulative training compute C (FLOPs)")
    ax.set_ylabel(label(key).replace("final ", ""))
    return _finish(ax, f"{key} against compute, per family")


def draw_laws(ax, laws: list[Law], colors: dict, what: str = "fit") -> list[Law]:
    """Each law's fitted points (open markers) and, only for identified laws, its dashed line; returns the
    laws drawn as lines. An unidentified law is not a frontier: its points stay, its line does not."""
    drawn = []
    for law in laws:
        if law.fit is None or not len(law.points):
            continue
        color = colors.get(law.family, "k")
        xs, ys = law.points[law.x].astype(float), law.points[law.y].astype(float)
        verdict = "" if law.identified else ", law not identified"
        ax.scatter(
            xs,
            ys,
            s=80,
            facecolors="none",
            edgecolors=[color],
            linewidths=1.5,
            zorder=4,
            label=f"{law.family} {what} points{verdict}",
        )
        if law.identified:
            grid = _law_grid(xs)
            ax.plot(
                grid,
                law.fit.predict(grid),
                "--",
                color=color,
                linewidth=2,
                label=f"{law.family} {what}: {_short_law(law)}",
            )
            drawn.append(law)
    return drawn


def draw_vs_params(ax, laws: list[Law], loss: str | None = None) -> bool:
    """Final loss against model size with each family's fitted L(N); False when no family has that law."""
    laws = [law for law in laws if law.kind == "params" and (loss is None or law.y == loss) and law.fit is not None]
    if not laws:
        return False
    colors = family_colors(law.family for law in laws)
    draw_laws(ax, laws, colors)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_y(ax)
    ax.set_xlabel(label(laws[0].x))
    ax.set_ylabel(label(laws[0].y))
    return _finish(ax, f"{laws[0].y} against model size (best run per size)")


def _short_law(law: Law) -> str:
    fit = law.fit
    var = "C" if law.kind == "compute" else "N"
    return f"{fit.E:.3g} + {fit.A:.3g}·${var}^{{-{fit.alpha:.3g}}}$"


def draw_vs_axis(ax, runs: pd.DataFrame, axis: str, metric: str, others: list[str]) -> bool:
    """Final `metric` against one varied axis: colour per family, marker per setting of the other varied
    axes (seeds averaged, ±1 std error bars). Families without this axis (a transformer baseline in a
    slot sweep) appear as a horizontal reference line. False when no completed run has both values."""
    done = runs[(runs["status"] == "completed")] if "status" in runs else runs
    if axis not in done or metric not in done:
        return False
    done = done[done[metric].notna()].assign(family=done["family"].fillna("?").astype(str))
    with_axis = done.groupby("family")[axis].apply(lambda v: v.notna().any())
    baselines = done[done["family"].isin(with_axis[~with_axis].index)]
    done = done[done[axis].notna()]
    if done.empty:
        return False
    others = _grouping(done, axis, others)
    settings = _settings(done, others)
    if settings.nunique() * done["family"].nunique() > MAX_LEGEND_GROUPS:
        others, settings = [], pd.Series("", index=done.index)
    numeric = pd.api.types.is_numeric_dtype(done[axis]) and not pd.api.types.is_bool_dtype(done[axis])
    categories = sorted(done[axis].map(_hashable).unique(), key=_sort_key)
    colors = family_colors(pd.concat([done["family"], baselines["family"]]))
    setting_order = list(dict.fromkeys(settings.loc[_sorted_index(done, others)]))
    groups = done.groupby([done["family"], settings], sort=False)
    for family, setting in sorted(groups.groups, key=lambda g: (g[0], setting_order.index(g[1]))):
        group = groups.get_group((family, setting))
        stats = group.groupby(group[axis].map(_hashable))[metric].agg(["mean", "std", "count"]).reset_index()
        xs = stats[axis].astype(float) if numeric else stats[axis].map(categories.index)
        order = np.argsort(np.asarray(xs))
        xs, stats = np.asarray(xs)[order], stats.iloc[order]
        k = setting_order.index(setting)
        ax.errorbar(
            xs,
            stats["mean"],
            yerr=stats["std"].fillna(0).where(stats["count"] > 1, 0),
            color=colors[family],
            marker=MARKERS[k % len(MARKERS)],
            linestyle=LINESTYLES[k % len(LINESTYLES)],
            capsize=3,
            label=f"{family}, {setting}" if setting else family,
        )
    for family, group in baselines.groupby("family"):
        ax.axhline(
            group[metric].mean(),
            color=colors[family],
            linestyle=(0, (1, 2)),
            linewidth=1.5,
            label=f"{family} (no {axis.split('.')[-1]}; mean of {len(group)} runs)",
        )
    if numeric:
        _numeric_ticks(ax, np.array(categories, dtype=float))
    else:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    ax.set_xlabel(axis)
    ax.set_ylabel(label(metric))
    return _finish(ax, f"{metric} against {axis}")


def _grouping(runs: pd.DataFrame, axis: str, others: list[str]) -> list[str]:
    """The other axes to draw separate lines for. An axis confounded with `axis` (e.g. data.context_len when
    it is derived as ratio·k and `axis` is k) would leave single-point lines; it is averaged over instead."""
    kept: list[str] = []
    for other in others:
        if other in (axis, *REPLICATE_KEYS) or other not in runs or not varies_within_family(runs, other):
            continue
        keys = [runs["family"]] + [runs[c].map(repr) for c in kept + [other]]
        if (runs.groupby(keys)[axis].nunique() >= 2).all():
            kept.append(other)
    return kept


# Tick label width in axis fractions per character, for a 7.5 in figure at the default 10 pt font; the gap
# check below keeps neighbouring labels at least this far apart, centre to centre.
_CHAR_WIDTH = 0.014
MAX_TICKS = 8


def _numeric_ticks(ax, values: np.ndarray) -> None:
    """Log x for axes spanning a decade or more (k, L/k, sizes); ticks at the swept values, printed compactly
    (13k), leaving out any whose label would run into the previous one (state sizes 13152 and 17536 on an
    axis spanning decades). More values than fit: a log locator with few ticks."""
    log = (values > 0).all() and values.max() / values.min() >= 8
    if log:
        ax.set_xscale("log")
    if len(values) > 12:
        if log:
            ax.xaxis.set_major_locator(LogLocator(numticks=MAX_TICKS))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    where = np.log10(values) if log else values
    width = max(float(where.max() - where.min()), 1e-12)
    kept: list[tuple[float, float, str]] = []
    for value, x in sorted(zip(values, where, strict=True)):
        text = _compact(value)
        if kept:
            need = (len(kept[-1][2]) + len(text)) / 2 * _CHAR_WIDTH + 0.01
            # the axis is padded by ~5% each side, so data fractions are a little wider than axis fractions
            if (x - kept[-1][1]) / width * 0.9 < need:
                continue
        kept.append((value, x, text))
    ax.set_xticks([v for v, _, _ in kept], [t for _, _, t in kept])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plain(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _compact(value) -> str:
    """13152 → 13.2k, 2097152 → 2.1M; values under 10,000 plainly."""
    value = float(value)
    for threshold, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / scale:.3g}{suffix}"
    return _plain(value)


def _sort_key(value):
    return (0, float(value), "") if isinstance(value, (int, float, np.number)) else (1, 0.0, str(value))


def _sorted_index(frame: pd.DataFrame, columns: list[str]) -> pd.Index:
    """Rows ordered by the values of `columns` (numerically where numeric), for a legend in sweep order."""
    if not columns:
        return frame.index
    keys = frame[columns].apply(lambda col: col.map(_sort_key))
    return keys.apply(tuple, axis=1).sort_values().index


MARKERS = "osD^v<>pP*"
LINESTYLES = ("-", "--", ":", "-.")


def _settings(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A short label per row for the values of `columns` ("steps=200, lr=0.003")."""
    if not columns:
        return pd.Series("", index=frame.index)
    parts = [frame[c].map(lambda v, c=c: f"{c.split('.')[-1]}={_plain(v) if _is_number(v) else v}") for c in columns]
    return pd.concat(parts, axis=1).agg(", ".join, axis=1)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value
