# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scaling laws of a memlab sweep
#
# Load the run directories of one sweep, look at the runs, fit per family a saturating power law
# `L = E + A·C^-α` of final eval loss against training compute (and against parameters when model size was
# varied), fit Chinchilla's `L(N, D) = E + A/N^α + B/D^β` when N and D were varied independently, and plot the
# main metric against every axis the sweep varied.
#
# Point it at a sweep with `MEMLAB_SWEEP_DIR=runs/<sweep>`; the default is the quickstart sweep's output.
# `memlab report DIR` writes the same analysis non-interactively to `DIR/report.md`.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memlab.analysis import fit_chinchilla, fit_power_law, load_runs, varied_axes
from memlab.analysis.axes import plot_axes, with_derived_axes
from memlab.analysis.laws import Law, best_per_value, loss_column, pareto_front, usable
from memlab.analysis.plots import draw_vs_axis, draw_vs_compute, family_colors
from memlab.analysis.report import higher_is_better, main_metric

# Bootstrap resamples behind the intervals; MEMLAB_BOOTSTRAP=0 skips them for a quick look.
BOOTSTRAP = int(os.environ.get("MEMLAB_BOOTSTRAP", "200"))
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)


def repo_root(start: Path) -> Path:
    """The checkout this notebook lives in, whether it runs from the repo root or from analysis/."""
    for path in (start, *start.parents):
        if (path / "pyproject.toml").exists():
            return path
    return start


SWEEP_DIR = Path(os.environ.get("MEMLAB_SWEEP_DIR") or repo_root(Path.cwd()) / "runs" / "quickstart")
if not SWEEP_DIR.is_dir():
    raise FileNotFoundError(
        f"no sweep at {SWEEP_DIR}: run `memlab sweep sweeps/quickstart.py` first, or set MEMLAB_SWEEP_DIR"
    )
SWEEP_DIR  # noqa: B018  (the cell's output: which sweep the notebook reads)

# %% [markdown]
# ## The runs
#
# One row per run directory: flattened config columns (`model.d_model`, ...), summary columns (`params`,
# `flops`, final metrics, `status`) and `run_dir`. Runs still in flight or failed are kept, with their status.

# %%
runs, derived = with_derived_axes(load_runs(SWEEP_DIR))
axes = varied_axes(runs, SWEEP_DIR) + derived
METRIC = main_metric(runs)
LOSS = loss_column(runs)
shown = ["run", "family", "status", "step", "params", "tokens", "flops", *axes, *dict.fromkeys([LOSS, METRIC])]
print(f"{len(runs)} runs; status: {runs['status'].value_counts().to_dict()}")
print(f"varied axes: {axes}; main metric: {METRIC} ({'higher' if higher_is_better(METRIC) else 'lower'} is better)")
runs[[c for c in dict.fromkeys(shown) if c in runs]].sort_values(["family", "flops"])

# %% [markdown]
# ## Loss against compute, per family
#
# A law of compute describes the *compute-efficient* runs, so it is fitted on each family's Pareto front
# (runs that no cheaper run beats). Intervals are bootstrap percentile intervals over those runs.

# %%
frontier_laws = []  # Law records: what draw_vs_compute draws the dashed frontiers from
for family, group in runs.groupby("family"):
    front = pareto_front(usable(group, ["flops", LOSS]), "flops", LOSS)
    if front["flops"].nunique() < 4:
        print(f"{family}: {front['flops'].nunique()} runs on the compute frontier, too few for a 3-parameter law")
        continue
    fit = fit_power_law(front["flops"].to_numpy(float), front[LOSS].to_numpy(float), bootstrap=BOOTSTRAP, seed=0)
    frontier_laws.append(Law(family, "compute", "flops", LOSS, front, fit))
    print(f"{family}: {fit.formula()}  (from {len(front)} runs)")
    if fit.ci:
        print("    95% intervals: " + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in fit.ci.items()))

# %% [markdown]
# Each run's curve (thin), its final value (dot) and the fitted frontier (dashed), on log-log axes.

# %%
keys = [k for k in dict.fromkeys([LOSS, "eval/accuracy"]) if k in runs and runs[k].notna().any()]
fig, axs = plt.subplots(1, len(keys), figsize=(7.5 * len(keys), 4.8), squeeze=False)
for ax, key in zip(axs[0], keys, strict=True):
    draw_vs_compute(ax, runs, key, frontier_laws)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Loss against parameters
#
# Where model size varied within a family: each size's best run, and `L(N) = E + A·N^-α`.

# %%
params_fits = {}
fig, ax = plt.subplots(figsize=(7.5, 4.8))
colors = family_colors(runs["family"].fillna("?"))
for family, group in runs.groupby("family"):
    sized = usable(group, ["params", LOSS])
    if sized["params"].nunique() < 4:
        print(f"{family}: {sized['params'].nunique()} model sizes, too few for a law in N")
        continue
    best = best_per_value(sized, "params", LOSS)
    fit = params_fits[family] = fit_power_law(
        best["params"].to_numpy(float), best[LOSS].to_numpy(float), bootstrap=BOOTSTRAP, seed=0
    )
    print(f"{family}: {fit.formula()}")
    grid = np.geomspace(best["params"].min() / 1.5, best["params"].max() * 1.5, 100)
    ax.scatter(best["params"], best[LOSS], color=colors[family], label=f"{family} runs")
    ax.plot(grid, fit.predict(grid), "--", color=colors[family], label=f"{family}: α = {fit.alpha:.3g}")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="parameters N",
    ylabel=f"final {LOSS}",
    title=f"{LOSS} against model size (best run per size)",
)
ax.grid(True, which="both", alpha=0.3)
if ax.get_legend_handles_labels()[0]:
    ax.legend()
plt.show()

# %% [markdown]
# ## Chinchilla `L(N, D)`
#
# Hoffmann et al.'s Approach 3 (Huber on log-loss, multi-start L-BFGS). It needs N and D varied independently
# (several token budgets per model size); otherwise the exponents are not identified and the fit is skipped.

# %%
chinchilla_fits = {}
for family, group in runs.groupby("family"):
    done = usable(group, ["params", "tokens", LOSS])
    n_sizes, n_budgets = done["params"].nunique(), done["tokens"].nunique()
    if len(done) < 8 or min(n_sizes, n_budgets) < 3:
        print(f"{family}: {len(done)} runs, {n_sizes} sizes × {n_budgets} token budgets: too few for L(N, D)")
        continue
    chinchilla = chinchilla_fits[family] = fit_chinchilla(
        done["params"].to_numpy(float), done["tokens"].to_numpy(float), done[LOSS].to_numpy(float)
    )
    print(
        f"{family}: E={chinchilla.E:.3g} A={chinchilla.A:.3g} B={chinchilla.B:.3g} "
        f"alpha={chinchilla.alpha:.3g} beta={chinchilla.beta:.3g}"
    )
    budget = float(done["flops"].max())
    print(f"    compute-optimal (N, D) at C={budget:.3g} FLOPs: {chinchilla.compute_optimal(budget)}")

# %% [markdown]
# ## The main metric against each varied axis
#
# Colour per family, one line per setting of the other axes (seeds averaged, ±1 std). Families without the
# axis (e.g. a transformer baseline in a slot sweep) are a dotted reference line.

# %%
for axis in plot_axes(runs, axes):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    if draw_vs_axis(ax, runs, axis, METRIC, axes):
        plt.show()
    else:
        plt.close(fig)
        print(f"{axis}: no completed run has both {axis} and {METRIC}")
