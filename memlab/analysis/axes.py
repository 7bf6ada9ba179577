"""Which config keys a sweep varied: the x-axes of the report's plots.

The sweep launcher records its axes in `sweep.json`; without one (runs gathered by hand, or from W&B) the
axes are the config columns that take more than one value.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .runs import read_json

# Config groups whose keys can be scientific axes; logging, mesh and stamps vary for bookkeeping reasons.
AXIS_GROUPS = ("model.", "data.", "objective.", "train.", "eval.")
# Replicate axes: averaged over in plots, never plotted against.
REPLICATE_KEYS = ("train.seed", "data.seed", "eval.seed")


def sweep_metas(path: str | Path) -> list[dict]:
    """The sweep.json records at `path` and in its immediate subdirectories (a dir of sweeps)."""
    root = Path(path)
    candidates = [root / "sweep.json"]
    if root.is_dir():
        candidates += sorted(p / "sweep.json" for p in root.iterdir() if p.is_dir())
    metas = [read_json(p) for p in candidates if p.is_file()]
    return [m for m in metas if isinstance(m, dict)]


def infer_varied(runs: pd.DataFrame) -> list[str]:
    """Config columns (in the scientific groups) that take more than one value across runs."""
    varied = []
    for column in runs.columns:
        if not column.startswith(AXIS_GROUPS):
            continue
        values = runs[column].dropna()
        if values.map(repr).nunique() > 1:
            varied.append(column)
    return varied


def varied_axes(runs: pd.DataFrame, sweep_dir: str | Path | None = None) -> list[str]:
    """The sweep's axes, in the order the sweep file lists them when sweep.json exists, else inferred.
    Axes recorded in sweep.json but absent from every run config are dropped (nothing to plot)."""
    metas = sweep_metas(sweep_dir) if sweep_dir is not None else []
    if not metas:
        return infer_varied(runs)
    axes: list[str] = []
    for meta in metas:
        for axis in meta.get("axes") or {}:
            if axis not in axes and axis in runs.columns:
                axes.append(axis)
    return axes


# Derived axes the design cares about but configs store as two keys: the slot-memory compression ratio L/k.
DERIVED = {"L/k": ("data.context_len", "model.num_slots")}
# Summary quantities that describe the architecture and are worth plotting against (Zoology's recall against
# decoding state size): axes whenever they vary.
SUMMARY_AXES = ("state_size",)


def with_derived_axes(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add derived ratio columns (e.g. "L/k" = data.context_len / model.num_slots) where both keys exist;
    returns the frame and the derived columns (and summary axes such as state_size) that vary."""
    added = []
    for name, (top, bottom) in DERIVED.items():
        if name in runs or top not in runs or bottom not in runs:
            continue
        ratio = pd.to_numeric(runs[top], errors="coerce") / pd.to_numeric(runs[bottom], errors="coerce")
        if ratio.notna().any():
            runs = runs.assign(**{name: ratio})
            if ratio.dropna().nunique() > 1:
                added.append(name)
    added += [name for name in SUMMARY_AXES if name in runs and runs[name].dropna().nunique() > 1]
    return runs, added


def varies_within_family(runs: pd.DataFrame, axis: str) -> bool:
    """False for axes that only tell families apart (model.mixers, model.name): the family legend shows them."""
    if axis not in runs or "family" not in runs:
        return False
    values = runs[axis].map(repr).where(runs[axis].notna())
    return bool((values.groupby(runs["family"].fillna("?")).nunique() > 1).any())


def plot_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """Axes worth a plot of their own: not replicate seeds, and varied within at least one family."""
    return [a for a in axes if a not in REPLICATE_KEYS and varies_within_family(runs, a)]
