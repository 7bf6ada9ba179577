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
# # Memory models across the objective mix
#
# Reads a sweep of memory models (`sweeps/memory_objective_mix.py`: the blank-copy weight from 0 to 2 × chunk
# length × width) and asks what the retention objective buys and costs: the causal loss on chunks after the first
# (what a memory can inform), the copy Hamming (argmax regeneration of blanked chunks from earlier memories) and,
# where `memlab probe-memory RUN_DIR` has been run, the calibrated information I_e' of the memories — each against
# training compute. Per copy weight it fits the compute frontier of the causal loss, `L = E + A·C^-α` (the lowest
# loss any run of that weight reached by compute C, read along the eval curves).
#
# Point it at a sweep with `MEMLAB_SWEEP_DIR=runs/<sweep>`; the default is `runs/memory_mix`.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memlab.analysis import load_runs
from memlab.analysis.fits.power_law import fit_power_law
from memlab.analysis.runs import notebook_sweep_dir

BOOTSTRAP = int(os.environ.get("MEMLAB_BOOTSTRAP", "200"))  # resamples behind the intervals; 0 skips them
COPY = "objective.next_token@blank_copy"
LOSS, HAMMING = "eval/later_chunks_loss", "eval/accuracy/next_token@blank_copy"
pd.set_option("display.width", 160)


SWEEP_DIR = notebook_sweep_dir(
    "runs/memory_mix", "memlab sweep sweeps/memory_objective_mix.py --workdir runs/memory_mix"
)
SWEEP_DIR  # noqa: B018  (the cell's output: which sweep the notebook reads)

# %% [markdown]
# ## The runs
#
# Memory-mode runs only (a probe trains its own run inside the probed run's directory; those are left out). A run
# trained without the copy objective does not evaluate it; its copy Hamming stays empty here (`memlab evaluate
# RUN_DIR --set objective.next_token@blank_copy=0.5` scores it). `I_e'` comes from `probe_memory/memory_info.json`.

# %%
runs = load_runs(SWEEP_DIR, curves=True)
runs = runs[(runs["model.name"] == "memory_model") & (runs["model.mode"] == "memory")].copy()
if runs.empty:
    raise ValueError(f"no memory-mode memory_model runs under {SWEEP_DIR}")
runs["copy_weight"] = runs[COPY].fillna(0.0) if COPY in runs else 0.0


def probe_info(run_dir: str) -> float:
    """The calibrated information of a run's memories, if it has been probed."""
    path = Path(run_dir) / "probe_memory" / "memory_info.json"
    return json.loads(path.read_text())["I_e_calibrated"] if path.exists() else np.nan


runs["I_e'"] = [probe_info(d) for d in runs["run_dir"]]
for column in (LOSS, HAMMING):
    if column not in runs:
        runs[column] = np.nan
shown = ["run", "status", "copy_weight", "data.chunk_len", "model.d_model", "flops", LOSS, HAMMING, "I_e'"]
runs[shown].sort_values(["copy_weight", "data.chunk_len", "model.d_model"])

# %% [markdown]
# ## The compute frontier of the causal loss, per copy weight
#
# Every evaluation of every run of one weight is a point (training FLOPs, loss on later chunks); the frontier is
# the running minimum over compute. A retention objective pays twice per step (its pass is a second forward), so
# at equal compute it must earn its keep in the loss or show it in the copy Hamming.


# %%
def frontier(group: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(flops, metric) of the group's evaluations, keeping each point that improves on all cheaper ones."""
    curves = [row["curve"] for _, row in group.iterrows() if metric in row["curve"]]
    points = pd.concat([curve[["flops", metric]].dropna() for curve in curves])
    points = points[points["flops"] > 0].sort_values("flops")
    return points[points[metric] < points[metric].cummin().shift(fill_value=np.inf)]


fronts = {w: frontier(g, LOSS) for w, g in runs.groupby("copy_weight")}
fits = {}
for weight, front in fronts.items():
    if len(front) >= 4 and front["flops"].nunique() >= 3:
        fits[weight] = fit_power_law(front["flops"], front[LOSS], bootstrap=BOOTSTRAP)
pd.DataFrame(
    [{"copy_weight": w, "points": len(fronts[w]), **fit.params(), "law": fit.formula("C")} for w, fit in fits.items()]
)

# %%
fig, (ax_loss, ax_copy) = plt.subplots(1, 2, figsize=(13, 4.8))
colors = dict(zip(sorted(fronts), plt.cm.viridis(np.linspace(0, 0.9, len(fronts))), strict=True))
for weight, group in runs.groupby("copy_weight"):
    for _, row in group.iterrows():
        curve = row["curve"]
        for ax, metric in ((ax_loss, LOSS), (ax_copy, HAMMING)):
            if metric in curve:
                points = curve[["flops", metric]].dropna()
                ax.plot(points["flops"], points[metric], color=colors[weight], alpha=0.35, lw=1)
    if weight in fits:
        grid = np.geomspace(fronts[weight]["flops"].min(), fronts[weight]["flops"].max(), 100)
        ax_loss.plot(grid, fits[weight].predict(grid), color=colors[weight], lw=2.5, label=f"copy weight {weight:g}")
ax_loss.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel="loss on later chunks (nats)")
ax_copy.set(xscale="log", xlabel="training FLOPs", ylabel="copy Hamming", ylim=(0, 1))
ax_loss.legend()
ax_loss.set_title("Causal loss: runs and fitted frontier")
ax_copy.set_title("Retention")
fig.tight_layout()

# %% [markdown]
# ## What the memories hold
#
# The final copy Hamming and, for probed runs, I_e' against the copy weight: the paper's claim is that next-token
# training alone (weight 0) leaves memories information-poor, and a retention term fills them.

# %%
final = runs.groupby("copy_weight")[[LOSS, HAMMING, "I_e'"]].mean()
fig, ax = plt.subplots(figsize=(6.5, 4.2))
ax.plot(final.index, final[HAMMING], "o-", label="copy Hamming")
if final["I_e'"].notna().any():
    ax.plot(final.index, final["I_e'"], "s-", label="probe I_e'")
ax.set(xlabel="blank-copy weight", ylabel="share", ylim=(0, 1), title="Memory information vs objective mix")
ax.legend()
fig.tight_layout()
final  # noqa: B018  (the cell's output: the means by copy weight)
