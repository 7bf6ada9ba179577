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
# `L = E + A·C^-α` of the final loss (bits per byte on text) against training compute (without the floor E
# when the runs cannot pin it down) and against parameters when model size was varied, fit Chinchilla's
# `L(N, D) = E + A/N^α + B/D^β` when N and D were varied independently, say which family wins at which
# budget, and plot the main metric against every axis the sweep varied.
#
# Point it at a sweep with `MEMLAB_SWEEP_DIR=runs/<sweep>`; the default is the quickstart sweep's output.
# `memlab report DIR` writes the same analysis non-interactively to `DIR/report.md`.

# %%
import os

import matplotlib.pyplot as plt
import pandas as pd

from memlab.analysis import fit_laws, load_runs, varied_axes
from memlab.analysis.axes import plot_axes, with_derived_axes
from memlab.analysis.compare import family_comparison
from memlab.analysis.laws import diagnostics_table, loss_column
from memlab.analysis.plots import draw_vs_axis, draw_vs_compute, draw_vs_params
from memlab.analysis.report import higher_is_better, main_metric
from memlab.analysis.runs import notebook_sweep_dir

# Bootstrap resamples behind the intervals; MEMLAB_BOOTSTRAP=0 skips them for a quick look.
BOOTSTRAP = int(os.environ.get("MEMLAB_BOOTSTRAP", "200"))
# Model size N of the laws: non-embedding parameters (as in the literature) or "params" (all of them).
SIZE = os.environ.get("MEMLAB_SIZE", "params_non_embedding")
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 20)


SWEEP_DIR = notebook_sweep_dir("runs/quickstart", "memlab sweep sweeps/quickstart.py")
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
shown = [
    "run",
    "family",
    "status",
    "step",
    "params",
    "params_non_embedding",
    "tokens",
    "flops",
    *axes,
    *dict.fromkeys([LOSS, METRIC]),
]
print(f"{len(runs)} runs; status: {runs['status'].value_counts().to_dict()}")
print(f"varied axes: {axes}; main metric: {METRIC} ({'higher' if higher_is_better(METRIC) else 'lower'} is better)")
runs[[c for c in dict.fromkeys(shown) if c in runs]].sort_values(["family", "flops"])

# %% [markdown]
# ## Fitted laws and whether the runs identify them
#
# Per family: `L = E + A·C^-α` on the compute frontier (runs that no cheaper run beats), `L(N) = E + A·N^-α` on
# each size's best run when model size varied (N counts non-embedding parameters unless `MEMLAB_SIZE=params`),
# Chinchilla's `L(N, D)` when N and D varied independently, and IsoFLOP valleys when runs share budgets.
# Accuracy is plotted, not fitted. Every law comes with the same diagnostics table as the report: points
# against free parameters, R² and residual RMS of log loss, bootstrap intervals, phase transitions. A law that
# is not identified says why and is not drawn.

# %%
laws = fit_laws(runs, loss=LOSS, size=SIZE, bootstrap=BOOTSTRAP, chinchilla_bootstrap=BOOTSTRAP, seed=0)
diagnostics_table(laws)

# %%
for law in laws:
    if law.fit is None:
        continue
    print(f"{law.family} {law.kind}: {law.fit.formula()}  [{law.status}]")
    intervals = law.fit.ci if getattr(law.fit, "ci", None) else law.diagnostics.intervals
    if intervals:
        print("    95% intervals: " + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in intervals.items()))
identified = {(law.family, law.kind): law.fit for law in laws if law.identified}
frontier_laws = [law for law in laws if law.kind == "compute"]  # draw_vs_compute draws only identified ones
params_fits = {family: fit for (family, kind), fit in identified.items() if kind == "params"}
# Chinchilla fits are kept even when not identified (often only E is loose): their exponents are still read.
chinchilla_laws = {law.family: law for law in laws if law.kind == "chinchilla" and law.fit is not None}
chinchilla_fits = {family: law.fit for family, law in chinchilla_laws.items()}

# %% [markdown]
# ## Which family wins, at which budget
#
# On the identified compute frontiers, over the compute every family covered: each family's loss, the winner,
# and the compute multiplier a family needs to match the winner's loss (the report's table).

# %%
family_comparison(laws)

# %% [markdown]
# ## Loss against compute, per family
#
# Each run's curve (thin), its final value (dot), the frontier points a law was fitted on (open circles) and,
# where the law is identified, the fitted frontier (dashed), on log-log axes.

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
# Where model size varied within a family: each size's best run, and `L(N) = E + A·N^-α` where identified.

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.8))
if draw_vs_params(ax, laws, LOSS):
    plt.show()
else:
    plt.close(fig)
    print("model size did not vary within any family: no law in N")

# %% [markdown]
# ## Chinchilla `L(N, D)`
#
# Hoffmann et al.'s Approach 3 (Huber on log-loss, multi-start L-BFGS). It needs N and D varied independently
# (several token budgets per model size); otherwise the exponents are not identified and the fit is skipped.
# Each fit is printed with its verdict: a loose floor E (a wide interval) makes the law unidentified even when
# the exponents are tight.

# %%
for family, chinchilla in chinchilla_fits.items():
    print(
        f"{family}: E={chinchilla.E:.3g} A={chinchilla.A:.3g} B={chinchilla.B:.3g} "
        f"alpha={chinchilla.alpha:.3g} beta={chinchilla.beta:.3g}  [{chinchilla_laws[family].status}]"
    )
    budget = float(runs.loc[runs["family"] == family, "flops"].max())
    print(f"    compute-optimal (N, D) at C={budget:.3g} FLOPs: {chinchilla.compute_optimal(budget)}")
for law in laws:
    if law.kind == "chinchilla" and law.fit is None:
        print(f"{law.family}: no L(N, D): {law.status}")

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
