"""Reading the fair protocol's runs (protocol.py): compute frontiers, compute to target with its bracket and a
bootstrap over seeds, accuracy at equal compute, the learning-rate and size tables, the k x L/k grid, plots.

Compute frontier of a family: the best exact match any of its runs at the chosen learning rate reached at or
below each training-FLOPs value (the upper envelope of their evaluations). Compute to target is read on it with
`efficiency.target_bracket` (log-FLOPs interpolation, the adjacent evaluations as the bracket); a frontier that
never reaches the target bounds it from below by its last evaluation. The bootstrap resamples each family's
seeds at the base size (their per-seed compute to target; a seed that never got there counts as infinite) and
takes the median; with three seeds the interval is coarse, and the report says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from memlab.analysis.plots import family_colors, save_png
from memlab.studies.slot_memory.efficiency import METRIC, eval_points, target_bracket
from memlab.studies.slot_memory.protocol import FAIR_BASELINE, FAMILIES, SLOT, Scale, stage_runs
from memlab.sweep.stages import Study

BASELINES = [f for f in FAMILIES if f != SLOT]
RESAMPLES = 2000


def evaluations(frame: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Every evaluation of every run in `frame`: run, family, flops, metric."""
    parts = [
        eval_points(frame.curves.of(row), metric).assign(run=row["run"], family=row["family"])
        for _, row in frame.iterrows()
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["flops", metric, "run", "family"])


def frontier(points: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """The upper envelope of (flops, metric) points: the best value reached at or below each FLOPs value (one
    point per FLOPs value: runs of one budget evaluate at the same FLOPs)."""
    best = points.groupby("flops")[metric].max().sort_index().cummax()
    return pd.DataFrame({"flops": best.index.to_numpy(float), metric: best.to_numpy(float)})


def seed_compute(frame: pd.DataFrame, target: float, metric: str = METRIC) -> np.ndarray:
    """Compute to target of each run in `frame` (one per seed): inf where a run never got there."""
    out = []
    for _, row in frame.iterrows():
        estimate = target_bracket(frame.curves.of(row), target, metric)[1]
        out.append(math.inf if math.isnan(estimate) else estimate)
    return np.asarray(out, float)


def bootstrap_ratio(base: np.ndarray, slot: np.ndarray, *, seed: int = 0) -> tuple[float, float, float]:
    """(ratio of seed medians, 2.5%, 97.5%) of median(base seeds) / median(slot seeds) over seed resamples. A
    ratio with an infinite side is inf (only the baseline never got there) or 0 (only the slots never did)."""
    rng = np.random.default_rng(seed)
    median = lambda a: np.quantile(a, 0.5, axis=-1, method="lower")  # a seed's own value: no inf - inf
    b = median(rng.choice(base, size=(RESAMPLES, len(base))))
    s = median(rng.choice(slot, size=(RESAMPLES, len(slot))))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = b / s  # inf / inf: neither got there, no ratio (NaN)
        point = median(base) / median(slot)
    ratios = ratios[~np.isnan(ratios)]
    if not len(ratios):
        return math.nan, math.nan, math.nan
    lo, hi = np.percentile(ratios, 2.5, method="lower"), np.percentile(ratios, 97.5, method="higher")
    return float(point), float(lo), float(hi)


class ProtocolReport:
    """The protocol's numbers from its study (the lr search's choices and the lr, seeds, sizes and grid stages)."""

    def __init__(self, study: Study, scale: Scale, metric: str = METRIC):
        self.scale, self.metric = scale, metric
        stages = {name: stage_runs(study, name) for name in ("lr", "seeds", "sizes", "grid")}
        self.lr_runs, self.grid_runs = stages["lr"], stages["grid"]
        self.lrs = study.choice("lr")
        chosen_lr = self.lr_runs[self.lr_runs["train.lr"] == self.lr_runs["family"].map(self.lrs)]
        self.chosen = pd.concat([chosen_lr, stages["seeds"], stages["sizes"]], ignore_index=True)
        self.points = evaluations(self.chosen, metric)

    def base_runs(self, family: str) -> pd.DataFrame:
        """The family's runs at the base width and chosen rate: one per seed, all ending at the budget."""
        rows = self.chosen[(self.chosen["family"] == family) & (self.chosen["model.d_model"] == self.scale.widths[0])]
        return rows.sort_values("train.seed")

    def frontier_bracket(self, family: str) -> tuple[float, float, float]:
        front = frontier(self.points[self.points["family"] == family], self.metric)
        return target_bracket(front, self.scale.target, self.metric)

    def ratios(self) -> pd.DataFrame:
        """Per baseline: frontier compute-to-target ratio (baseline / slots) with its bracket, and the seed
        bootstrap of the base-size ratio."""
        s_low, s_est, s_high = self.frontier_bracket(SLOT)
        slot_seeds = seed_compute(self.base_runs(SLOT), self.scale.target, self.metric)
        rows = []
        for family in BASELINES:
            b_low, b_est, b_high = self.frontier_bracket(family)
            point, lo, hi = bootstrap_ratio(
                seed_compute(self.base_runs(family), self.scale.target, self.metric), slot_seeds
            )
            rows.append(
                {
                    "baseline": family,
                    "baseline_flops_to_target": b_est,
                    "slot_flops_to_target": s_est,
                    "frontier_ratio": b_est / s_est,
                    # what the evaluations around the crossings allow; one side unreached gives a bound
                    "ratio_low": b_low / s_high if not math.isnan(s_high) else 0.0,
                    "ratio_high": b_high / s_low if not math.isnan(b_high) and s_low > 0 else math.inf,
                    "seed_median_ratio": point,
                    "bootstrap_2.5%": lo,
                    "bootstrap_97.5%": hi,
                }
            )
        return pd.DataFrame(rows)

    def equal_compute(self) -> pd.DataFrame:
        """Final exact match of each family's base-size seeds (every schedule ends at the budget)."""
        rows = []
        for family in FAMILIES:
            finals = self.base_runs(family)[self.metric].to_numpy(float)
            rows.append(
                {
                    "family": family,
                    "lr": self.lrs[family],
                    "params": float(self.base_runs(family)["params"].iloc[0]),
                    "seeds": len(finals),
                    "mean": finals.mean(),
                    "min": finals.min(),
                    "max": finals.max(),
                }
            )
        return pd.DataFrame(rows)

    def lr_table(self) -> pd.DataFrame:
        table = self.lr_runs.pivot_table(index="family", columns="train.lr", values=self.metric)
        table.columns = [f"lr={c:g}" for c in table.columns]
        return table.reset_index()

    def size_table(self) -> pd.DataFrame:
        seed0 = self.chosen[self.chosen["train.seed"] == self.scale.seeds[0]]
        table = seed0.pivot_table(index="family", columns="model.d_model", values=self.metric)
        params = seed0.pivot_table(index="family", columns="model.d_model", values="params")
        table.columns = [f"d={c}" for c in table.columns]
        table["parameters"] = [" / ".join(f"{p:.3g}" for p in row) for row in params.to_numpy()]
        return table.reset_index()

    def grid(self) -> pd.DataFrame:
        """Per (k, L/k): compute to target of the slots and of the encoder-free baseline on the same task (L and
        facts), their ratio, and L/k (the seed's intuition: the gain approaches L/k from below)."""
        runs, rows = self.grid_runs, []
        slots = runs[runs["family"] == SLOT]
        for _, slot in slots.sort_values(["model.num_slots", "data.context_len"]).iterrows():
            length, k = int(slot["data.context_len"]), int(slot["model.num_slots"])
            same_task = (runs["data.context_len"] == length) & (runs["data.num_facts"] == slot["data.num_facts"])
            base = runs[(runs["family"] == FAIR_BASELINE) & same_task]
            s_est = target_bracket(runs.curves.of(slot), self.scale.target, self.metric)[1]
            b_est = (
                target_bracket(runs.curves.of(base.iloc[0]), self.scale.target, self.metric)[1]
                if len(base)
                else math.nan
            )
            rows.append(
                {
                    "k": k,
                    "L": length,
                    "L/k": length / k,
                    "slot_final": slot[self.metric],
                    "baseline_final": base[self.metric].iloc[0] if len(base) else math.nan,
                    "slot_flops_to_target": s_est,
                    "baseline_flops_to_target": b_est,
                    "ratio": b_est / s_est,
                    "flops_per_example_ratio": (base["flops_per_example"].iloc[0] / slot["flops_per_example"])
                    if len(base)
                    else math.nan,
                }
            )
        return pd.DataFrame(rows)

    def plot_frontiers(self, path: Path) -> Path:
        return save_png(path, self._draw_frontiers)

    def plot_grid(self, path: Path, grid: pd.DataFrame) -> Path:
        return save_png(path, self._draw_grid, grid)

    def _draw_frontiers(self, ax) -> bool:
        colors = family_colors(FAMILIES)
        for family in FAMILIES:
            points = self.points[self.points["family"] == family]
            for _, run in points.groupby("run"):
                ax.plot(run["flops"], run[self.metric], color=colors[family], alpha=0.25, lw=0.8)
            front = frontier(points, self.metric)
            ax.step(front["flops"], front[self.metric], where="post", color=colors[family], lw=2, label=family)
        ax.axhline(self.scale.target, color="grey", ls=":", lw=1)
        ax.set(xscale="log", xlabel="training FLOPs", ylabel=self.metric, title="compute frontiers (chosen lr)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        return True

    def _draw_grid(self, ax, grid: pd.DataFrame) -> bool:
        for k, group in grid.groupby("k"):
            ax.plot(group["L/k"], group["slot_final"], marker="o", label=f"slot_memory k={k}")
            ax.plot(group["L/k"], group["baseline_final"], marker="x", ls="--", label=f"{FAIR_BASELINE} (L = k x L/k)")
        ax.set(xscale="log", xlabel="L / k", ylabel=f"final {self.metric}", title="k x L/k grid")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        return True
