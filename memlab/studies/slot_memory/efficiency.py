"""Compute efficiency from run curves: training FLOPs to reach a target answer accuracy, and accuracy at equal
compute, for the slot memory against its baselines (full encoder-decoder, decoder-only LM).

Two rules keep the comparison fair. Compute to target is known only between two evaluations, so it comes with
that bracket, and a run that never reached the target bounds it from below only by its last evaluation (not by
compute it spent after it). Accuracy at equal compute compares completed runs whose schedules end at the same
budget (within `SAME_BUDGET`): a run read in the middle of its schedule (learning rate still high, or barely
past warm-up) is not at its best, so it is never set against one read at the end of its own.

Reads only run directories. A run's family is its `model.name`; slot runs are placed by k (`model.num_slots`)
and L (`data.context_len`). `write_efficiency_report(dir)` writes efficiency.md (table and ratios) and PNGs:
accuracy vs FLOPs per family, compute-to-target vs L/k.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memlab.analysis.plots import family_colors
from memlab.analysis.runs import load_runs
from memlab.analysis.tables import frame_markdown

SLOT, BASELINES = "slot_memory", ("encdec", "lm")
METRIC = "eval/exact_match"  # whole answers right; per-token teacher-forced accuracy flatters (context_qa.py)
SAME_BUDGET = 0.1  # two schedules end at "the same" compute when their budgets differ by at most this fraction


def eval_points(curve: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The (flops, metric) evaluations of a curve, in FLOPs order (empty when the run logged neither)."""
    if metric not in curve or "flops" not in curve:
        return pd.DataFrame(columns=["flops", metric])
    return curve[["flops", metric]].dropna().sort_values("flops")


def compute_to_target(curve: pd.DataFrame, target: float, metric: str = METRIC) -> float:
    """Training FLOPs at which `metric` first reaches `target`, interpolated in log-FLOPs between the eval before
    and the eval at the crossing (NaN if never reached)."""
    return target_bracket(curve, target, metric)[1]


def target_bracket(curve: pd.DataFrame, target: float, metric: str = METRIC) -> tuple[float, float, float]:
    """(low, estimate, high) training FLOPs to reach `target`: the evaluations just before and at the first
    crossing, and the log-FLOPs interpolation between them. Never reached: (FLOPs of the last evaluation, a
    lower bound, NaN, NaN). Reached at the first evaluation: (0, its FLOPs, its FLOPs). No evaluation: NaNs."""
    points = eval_points(curve, metric)
    flops, values = points["flops"].to_numpy(float), points[metric].to_numpy(float)
    hits = np.flatnonzero(values >= target)
    if not len(hits):
        return (float(flops[-1]) if len(flops) else math.nan), math.nan, math.nan
    i = hits[0]
    if i == 0:
        return 0.0, float(flops[0]), float(flops[0])
    if values[i] == values[i - 1]:
        return float(flops[i - 1]), float(flops[i]), float(flops[i])
    frac = (target - values[i - 1]) / (values[i] - values[i - 1])
    estimate = np.exp(np.log(flops[i - 1]) + frac * (np.log(flops[i]) - np.log(flops[i - 1])))
    return float(flops[i - 1]), float(estimate), float(flops[i])


def scheduled_flops(row: pd.Series) -> float:
    """Training FLOPs of a run's whole schedule (steps x batch x FLOPs per example), whether or not it got there."""
    try:
        return float(row["train.steps"] * row["train.batch_size"] * row["flops_per_example"])
    except (KeyError, TypeError):
        return math.nan


def final_metric(row: pd.Series, curve: pd.DataFrame, metric: str = METRIC) -> float:
    """`metric` at the last evaluation of a completed run (the end of its schedule); NaN for any other run."""
    points = eval_points(curve, metric)
    if row.get("status") != "completed" or not len(points):
        return math.nan
    return float(points[metric].iloc[-1])


def efficiency_table(runs: pd.DataFrame, target: float, metric: str = METRIC) -> pd.DataFrame:
    """One row per run: family, k, L, L/k, parameters, FLOPs per example, best accuracy, FLOPs to target."""
    rows = []
    for _, row in runs.iterrows():
        curve = runs.curves.of(row)
        family = row.get("model.name")
        slots = row.get("model.num_slots") if family == SLOT else math.nan
        length = row.get("data.context_len")
        evals = eval_points(curve, metric)
        low, estimate, high = target_bracket(curve, target, metric)
        rows.append(
            {
                "run": row["run"],
                "family": family,
                "k": slots,
                "L": length,
                "L/k": length / slots if family == SLOT else math.nan,
                "params": row.get("params"),
                "flops_per_example": row.get("flops_per_example"),
                "flops": row.get("flops"),
                "scheduled_flops": scheduled_flops(row),
                "best_accuracy": float(evals[metric].max()) if len(evals) else math.nan,
                "final_accuracy": final_metric(row, curve, metric),
                "flops_to_target": estimate,
                # the evaluations around the crossing; where the target was never reached, `low` is the last one
                "flops_to_target_low": low,
                "flops_to_target_high": high,
            }
        )
    return pd.DataFrame(rows)


def efficiency_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """For each slot run and each baseline run at the same L: compute-to-target ratio (baseline / slot; > 1 means
    the slots need less compute) with the range the evaluation brackets allow, FLOPs-per-example ratio, and,
    where both schedules end at the same budget, both final accuracies (accuracy at equal compute)."""
    out = []
    for _, slot in table[table["family"] == SLOT].iterrows():
        for _, base in table[(table["family"].isin(BASELINES)) & (table["L"] == slot["L"])].iterrows():
            same_budget = abs(base["scheduled_flops"] / slot["scheduled_flops"] - 1) <= SAME_BUDGET
            reached = not math.isnan(base["flops_to_target"])
            out.append(
                {
                    "L": slot["L"],
                    "k": slot["k"],
                    "baseline": base["family"],
                    "slot_run": slot["run"],
                    "baseline_run": base["run"],
                    "compute_to_target_ratio": base["flops_to_target"] / slot["flops_to_target"],
                    # the extremes the two brackets allow (ratio_high is NaN where the baseline never got there)
                    "ratio_low": base["flops_to_target_low"] / slot["flops_to_target_high"],
                    "ratio_high": base["flops_to_target_high"] / slot["flops_to_target_low"] if reached else math.nan,
                    # where the baseline never got there, its last evaluation below the target is a floor on its
                    # compute to target (compute spent after that evaluation says nothing)
                    "ratio_lower_bound": math.nan if reached else base["flops_to_target_low"] / slot["flops_to_target"],
                    "flops_per_example_ratio": base["flops_per_example"] / slot["flops_per_example"],
                    "equal_compute_flops": slot["scheduled_flops"] if same_budget else math.nan,
                    "slot_accuracy": slot["final_accuracy"] if same_budget else math.nan,
                    "baseline_accuracy": base["final_accuracy"] if same_budget else math.nan,
                }
            )
    return pd.DataFrame(out)


def _plot_accuracy_vs_flops(path: Path, runs: pd.DataFrame, metric: str) -> Path:
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = family_colors(runs["model.name"])
    seen = set()
    for _, row in runs.iterrows():
        family, points = row["model.name"], eval_points(runs.curves.of(row), metric)
        if len(points):
            ax.plot(
                points["flops"],
                points[metric],
                marker=".",
                color=colors[family],
                alpha=0.8,
                label=None if family in seen else family,
            )
            seen.add(family)
    ax.set(xscale="log", xlabel="training FLOPs", ylabel=metric, title=f"{metric} vs compute, per family")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _plot_compute_to_target(path: Path, table: pd.DataFrame, target: float) -> Path:
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    slots = table[table["family"] == SLOT].dropna(subset=["flops_to_target"])
    for k, group in slots.groupby("k"):
        group = group.sort_values("L/k")
        ax.plot(group["L/k"], group["flops_to_target"], marker="o", label=f"slot_memory k={k:g}")
    for family in BASELINES:  # a baseline has no k: drawn at L / k for each slot k run at the same L
        base = table[table["family"] == family].dropna(subset=["flops_to_target"])
        xs, ys = [], []
        for _, b in base.iterrows():
            for k in slots[slots["L"] == b["L"]]["k"]:
                xs.append(b["L"] / k)
                ys.append(b["flops_to_target"])
        if xs:
            ax.scatter(xs, ys, marker="x", label=f"{family} (same L)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="L / k",
        ylabel=f"FLOPs to accuracy {target:g}",
        title="compute to target vs context/slot ratio",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def write_efficiency_report(
    path: str | Path, *, target: float = 0.9, metric: str = METRIC, headline: tuple[int, int] = (512, 32)
) -> Path:
    """efficiency.md with the per-run table, slot-vs-baseline ratios and the headline ratio at (L, k), plus
    accuracy_vs_flops.png and compute_to_target_vs_ratio.png, all in `path`."""
    root = Path(path)
    runs = load_runs(root)
    if runs.empty or "model.name" not in runs:
        raise FileNotFoundError(f"no runs under {root}")
    table = efficiency_table(runs, target, metric)
    ratios = efficiency_ratios(table)
    plots = [
        _plot_accuracy_vs_flops(root / "accuracy_vs_flops.png", runs, metric),
        _plot_compute_to_target(root / "compute_to_target_vs_ratio.png", table, target),
    ]
    length, k = headline
    lines = [
        f"# Slot-memory efficiency ({len(table)} runs, target {metric} >= {target:g})",
        "",
        "Compute counts training FLOPs (3x forward, context encoding included). `compute_to_target_ratio` ="
        " baseline FLOPs to target / slot FLOPs to target (> 1: slots cheaper), interpolated in log-FLOPs between"
        " evaluations; `ratio_low`..`ratio_high` is the range the evaluations around each crossing allow; NaN"
        " where a run never reached the target; `ratio_lower_bound` = a baseline's last evaluation below the"
        " target / slot FLOPs to target where only the slot run got there. Accuracy at equal compute compares"
        f" the final accuracies of completed runs whose schedules end within {SAME_BUDGET:.0%} of each other.",
        "",
        "## Headline",
        "",
        _headline(ratios, length, k),
        "",
        "## Runs",
        "",
        frame_markdown(table),
        "",
        "## Slot vs baselines",
        "",
        frame_markdown(ratios) if len(ratios) else "(no slot/baseline pair at equal L)",
        "",
        *(f"![{p.stem}]({p.name})" for p in plots),
        "",
    ]
    out = root / "efficiency.md"
    out.write_text("\n".join(lines))
    return out


def _headline(ratios: pd.DataFrame, length: int, k: int) -> str:
    if ratios.empty:
        return f"No slot run with a baseline at L={length}."
    at = ratios[(ratios["L"] == length) & (ratios["k"] == k)]
    if at.empty:
        return f"No slot run at L={length}, k={k} with a baseline at the same L."
    parts = []
    for _, r in at.iterrows():
        ratio = f"{r['compute_to_target_ratio']:.3g} (between evaluations: {r['ratio_low']:.3g}-{r['ratio_high']:.3g})"
        if not math.isnan(r["ratio_lower_bound"]):
            ratio = f"> {r['ratio_lower_bound']:.3g} ({r['baseline']} below the target at its last evaluation)"
        if math.isnan(r["equal_compute_flops"]):
            equal = "no equal-compute comparison (their schedules end at different budgets)"
        else:
            equal = (
                f"schedules ending at {r['equal_compute_flops']:.3g} FLOPs: slot {r['slot_accuracy']:.3f} vs "
                f"{r['baseline']} {r['baseline_accuracy']:.3f}"
            )
        parts.append(
            f"- L={length}, k={k} vs {r['baseline']} ({r['baseline_run']}): compute-to-target ratio "
            f"{ratio}, FLOPs-per-example ratio {r['flops_per_example_ratio']:.3g}; {equal}"
        )
    return "\n".join(parts)
