"""`write_report(sweep_dir)`: the sweep at a glance in `report.md` plus PNG figures beside it.

What a researcher wants after a sweep: which runs finished, how big and how expensive they were, what they
reached, the scaling laws the runs support (with intervals), and plots against compute and against every
axis the sweep varied. Anything that cannot be computed is said in the report instead of crashing it.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from .axes import plot_axes, sweep_metas, varied_axes, with_derived_axes
from .compare import family_comparison
from .laws import ACCURACY_NOTE, Law, diagnostics_table, fit_laws, is_accuracy, loss_column
from .plots import draw_vs_axis, draw_vs_compute, draw_vs_params, save_png, slug
from .runs import load_runs
from .tables import is_missing, markdown_table, num, sci, si

_PARAMS = {
    "compute": ("E", "A", "alpha"),
    "params": ("E", "A", "alpha"),
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
    "isoflop": ("a", "b"),
}


def main_metric(runs: pd.DataFrame) -> str:
    """Bits per byte on text (what a language-modelling study is about), eval/accuracy when the task has one
    (MQAR-style sweeps), else the loss."""
    if "eval/bits_per_byte" in runs and runs["eval/bits_per_byte"].notna().any():
        return "eval/bits_per_byte"
    if "eval/accuracy" in runs and runs["eval/accuracy"].notna().any():
        return "eval/accuracy"
    return loss_column(runs)


def higher_is_better(metric: str) -> bool:
    return any(word in metric for word in ("acc", "exact", "recall", "f1", "score"))


def _header(runs: pd.DataFrame, sweep_dir: Path, metric: str, axes: list[str]) -> list[str]:
    meta = (sweep_metas(sweep_dir) or [{}])[0]
    counts = runs["status"].value_counts() if "status" in runs else pd.Series(dtype=int)
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines = [f"# Sweep report: {meta.get('name') or sweep_dir.name}", ""]
    lines.append(f"- directory: `{sweep_dir}`")
    for key in ("sweep_id", "launch_id"):
        values = {str(v) for v in runs.get(f"logging.{key}", pd.Series(dtype=str)).dropna()} | {str(meta.get(key))}
        values = sorted(v for v in values if v not in ("", "None"))
        if values:
            lines.append(f"- {key.replace('_', ' ')}: " + ", ".join(f"`{v}`" for v in values))
    lines.append(f"- runs: {len(runs)}" + (f" ({status})" if status else ""))
    direction = "higher is better" if higher_is_better(metric) else "lower is better"
    lines.append(f"- main metric: `{metric}` ({direction})")
    lines.append("- varied axes: " + (", ".join(f"`{a}`" for a in axes) if axes else "none found"))
    return lines + [""]


def _present(runs: pd.DataFrame, column: str) -> bool:
    return column in runs and bool(runs[column].notna().any())


def _percent(value) -> str:
    return "–" if is_missing(value) else f"{100 * float(value):.3g}%"


def _runs_table(runs: pd.DataFrame, metric: str) -> list[str]:
    metrics = [m for m in dict.fromkeys([metric, "eval/loss", "eval/accuracy", "train/loss"]) if m in runs]
    # the runs' mean achieved training TFLOP/s per device and MFU (summary.json), where some run has them
    rates = [(c, h) for c, h in (("tflops_per_s_per_device", "TFLOP/s/device"), ("mfu", "MFU")) if _present(runs, c)]
    header = ["run", "family", "params", "non-emb params", "tokens", "FLOPs", "status", "step"] + metrics
    header += [h for _, h in rates] + ["wall s"]
    order = [c for c in ("family", "params", "flops", "run") if c in runs]
    rows = []
    for _, r in runs.sort_values(order, na_position="last").iterrows():
        step = f"{num(r.get('step'))}/{num(r.get('steps'))}" if not is_missing(r.get("steps")) else num(r.get("step"))
        rows.append(
            [
                f"`{r['run']}`",
                r.get("family"),
                si(r.get("params")),
                si(r.get("params_non_embedding")),
                si(r.get("tokens")),
                sci(r.get("flops")),
                r.get("status"),
                step,
            ]
            + [num(r.get(m)) for m in metrics]
            + [_percent(r.get(c)) if c == "mfu" else num(r.get(c), 3) for c, _ in rates]
            + [num(r.get("wall_seconds"), 3)]
        )
    lines = ["## Runs", "", markdown_table(header, rows), ""]
    failed = runs[runs["status"].isin(["failed", "interrupted"])] if "status" in runs else runs.iloc[0:0]
    if len(failed):
        lines += ["Failed or interrupted runs:", ""]
        lines += [f"- `{r['run']}`: {r.get('error') or 'no error recorded'}" for _, r in failed.iterrows()]
        lines.append("")
    return lines


def _best_runs(runs: pd.DataFrame, metric: str) -> list[str]:
    done = runs[(runs["status"] == "completed") & runs[metric].notna()] if metric in runs else runs.iloc[0:0]
    if done.empty:
        return ["## Best run per family", "", f"No completed run has `{metric}` yet.", ""]
    pick = (
        done.groupby("family")[metric].idxmax() if higher_is_better(metric) else done.groupby("family")[metric].idxmin()
    )
    rows = [
        [r["family"], f"`{r['run']}`", num(r[metric]), si(r.get("params")), sci(r.get("flops"))]
        for _, r in done.loc[pick].iterrows()
    ]
    return ["## Best run per family", "", markdown_table(["family", "run", metric, "params", "FLOPs"], rows), ""]


def _interval(fit: Any, name: str, diagnostics=None) -> str:
    ci = getattr(fit, "ci", None) or (diagnostics.intervals if diagnostics is not None else None)
    if ci and name in ci and ci[name] is not None:
        lo, hi = ci[name]
        return f"[{num(lo)}, {num(hi)}]"
    se = getattr(fit, "se", None)
    if isinstance(se, dict) and not is_missing(se.get(name)):
        return f"± {num(se[name], 3)} (s.e.)"
    return "–"


def _law_lines(law: Law) -> list[str]:
    lines = [f"**{law.title}**"]
    if law.fit is None:
        return lines + ["", f"Skipped: {law.skipped}.", ""]
    what = {
        "compute": "runs on the compute frontier (Pareto front of final loss vs FLOPs)",
        "params": "model sizes (best run of each size)",
        "chinchilla": "completed runs",
        "isoflop": "completed runs",
    }[law.kind]
    lines += ["", f"Fitted on {len(law.points)} {what}."]
    d = law.diagnostics
    if d is not None:
        goodness = f"R² (log) = {num(d.r2_log, 3)}, residual RMS (log) = {num(d.residual_rms, 3)}"
        if law.identified:
            lines += ["", f"Identified: {d.n_points} points for {d.n_params} parameters, {goodness}."]
            if law.note:
                lines[-1] += f" {law.note[0].upper()}{law.note[1:]}."
        else:
            lines += [
                "",
                f"**Not identified** ({d.n_points} points for {d.n_params} parameters, {goodness}), so not drawn: "
                + "; ".join(d.reasons)
                + ". The estimates below are not a law.",
            ]
    formula = (
        law.fit.formula("C" if law.kind == "compute" else "N")
        if law.kind in ("compute", "params")
        else law.fit.formula()
    )
    lines += ["", f"`{formula}`"]
    rows = [
        [name, num(getattr(law.fit, name)), _interval(law.fit, name, law.diagnostics)] for name in _PARAMS[law.kind]
    ]
    lines += ["", markdown_table(["parameter", "estimate", "interval"], rows)]
    ref = (getattr(law.fit, "ci", None) or (d.intervals if d else {})).get("A_ref")
    if ref and getattr(law.fit, "x_ref", None):
        lines += [
            "",
            f"A is the law at x = 1, far from the data; at the data's centre (x = {num(law.fit.x_ref, 3)}) "
            f"A·x^-α lies in [{num(ref[0])}, {num(ref[1])}], the interval the diagnosis judges.",
        ]
    if law.kind == "chinchilla":
        lines += _compute_optimal(law)
    if law.kind == "isoflop":
        rows = [
            [sci(r.flops), int(r.n_runs), si(r.n_opt), si(r.d_opt), num(r.loss_opt), "yes" if r.extrapolated else ""]
            for r in law.fit.table.itertuples()
        ]
        lines += [
            "",
            "Per budget (parabola in log N):",
            "",
            markdown_table(["C (FLOPs)", "runs", "N_opt", "D_opt", "loss at N_opt", "extrapolated"], rows),
        ]
    return lines + [""]


def _compute_optimal(law: Law) -> list[str]:
    """N_opt and D_opt at the sweep's largest budget and 10× and 100× beyond it."""
    size = law.x.split(",")[0]
    budget = float((6 * law.points[size] * law.points["tokens"]).max())
    rows = []
    for c in (budget, 10 * budget, 100 * budget):
        try:
            n_opt, d_opt = _pair(law.fit.compute_optimal(c))
        except Exception as error:  # e.g. an exponent estimate that makes the optimum undefined
            return ["", f"Compute-optimal allocation unavailable: {type(error).__name__}: {error}."]
        rows.append([sci(c), si(n_opt), si(d_opt), num(d_opt / n_opt, 3)])
    return [
        "",
        "Compute-optimal allocation (C = 6·N·D):",
        "",
        markdown_table(["C (FLOPs)", "N_opt", "D_opt", "tokens per parameter"], rows),
    ]


def _pair(result: Any) -> tuple[float, float]:
    if isinstance(result, dict):
        return float(result.get("n_opt", result.get("N"))), float(result.get("d_opt", result.get("D")))
    n_opt, d_opt = result
    return float(n_opt), float(d_opt)


def _intervals_note(bootstrap: int) -> str:
    if bootstrap:
        return f"intervals are 95% percentile intervals over {bootstrap} bootstrap resamples of the runs"
    return "no bootstrap was run, so there are no intervals"


def _diagnostics_lines(laws: list[Law]) -> list[str]:
    """The diagnostics table (same as the notebook's): one row per law, identified or why not."""
    table = diagnostics_table(laws)
    rows = [
        [
            r.family,
            r.law,
            f"`{r.x}`",
            r.points,
            num(r.params),
            num(r[6], 3),
            num(r[7], 3),
            "yes" if r.identified else "no",
            r[9],
        ]
        for r in table.itertuples(index=False)
    ]
    header = ["family", "law", "x", "points", "parameters", "R² (log)", "residual RMS (log)", "identified", "why not"]
    return [
        "### Diagnostics",
        "",
        "A law is identified when it has at least 2 more points than parameters, every bootstrap interval "
        "spans less than a factor of 10 (A judged mid-data), R² of log loss is at least 0.95, the residual RMS of "
        "log loss at most 0.05, the points move by more than 2%, and no step between consecutive points holds most "
        "of the change (a phase transition). Laws that are not identified are not drawn.",
        "",
        markdown_table(header, rows),
        "",
    ]


def _laws_section(
    laws: list[Law],
    bootstrap: int,
    chinchilla_bootstrap: int,
    size: str = "params_non_embedding",
    accuracy: list[str] = (),
) -> list[str]:
    lines = ["## Fitted laws", ""]
    n_label = "non-embedding parameters" if size == "params_non_embedding" else "all parameters (embeddings included)"
    lines += [f"Model size N counts {n_label} (`{size}`).", ""]
    lines += [f"- {key}: {ACCURACY_NOTE} (`memlab report --fit-accuracy`)." for key in accuracy]
    if accuracy:
        lines.append("")
    lines.append(
        f"Saturating power laws `L = E + A·X^-α`, fitted on log-loss; {_intervals_note(bootstrap)}. "
        "Chinchilla `L(N, D) = E + A/N^α + B/D^β` is Hoffmann et al.'s Approach 3 (Huber on log-loss, "
        "multi-start L-BFGS), fitted when N and D were varied independently; "
        f"{_intervals_note(chinchilla_bootstrap)}."
    )
    lines.append("")
    if not laws:
        return lines + ["No completed runs to fit.", ""]
    lines += _diagnostics_lines(laws)
    lines += _comparison_lines(laws)
    for family in dict.fromkeys(law.family for law in laws):
        lines += [f"### {family}", ""]
        family_laws = [law for law in laws if law.family == family]
        for law in family_laws:
            lines += _law_lines(law)
        if not any(law.kind == "params" for law in family_laws):
            lines += ["Laws in N and in (N, D): skipped, model size was not varied in this family.", ""]
    return lines + ["The same laws in machine-readable form: [laws.json](laws.json).", ""]


def _comparison_lines(laws: list[Law]) -> list[str]:
    """Which family wins at which budget, and by how much (compare.family_comparison)."""
    table = family_comparison(laws)
    if table.empty:
        return []
    loss = next(law.y for law in laws if law.kind == "compute")
    lines = [
        "### Which family wins, at which budget",
        "",
        f"{loss} on each family's identified compute frontier at budgets spanning the compute all of them covered;"
        " the multiplier is the compute a family needs to match the winner's loss there (1 for the winner).",
        "",
    ]
    header = list(table.columns)
    rows = ([sci(v) if c == "budget_flops" else num(v, 3) for c, v in row.items()] for _, row in table.iterrows())
    lines += [markdown_table(header, rows), ""]
    lines += [_protocol_caveat([law for law in laws if law.kind == "compute" and law.identified]), ""]
    last = table.iloc[-1]
    others = [c.removesuffix(" compute multiplier") for c in header if c.endswith("multiplier")]
    losers = [f for f in others if f != last["winner"]]
    if losers:
        worst = max(losers, key=lambda f: last[f"{f} compute multiplier"])
        lines += [
            f"At {sci(last['budget_flops'])} FLOPs {last['winner']} reaches {num(last[f'{last.winner} loss'], 3)};"
            f" {worst} would need {num(last[f'{worst} compute multiplier'], 3)}x that compute for the same loss.",
            "",
        ]
    return lines


def _protocol_caveat(laws: list[Law]) -> str:
    """How many seeds and learning rates stand behind each frontier: a family comparison is only fair when each
    family had its own tuned rate and several seeds, and the reader should see at once whether it did."""
    parts, thin = [], False
    for law in laws:
        seeds = law.points["train.seed"].nunique() if "train.seed" in law.points else 1
        lrs = sorted(law.points["train.lr"].unique()) if "train.lr" in law.points else []
        thin |= seeds < 2 or len(lrs) < 2
        parts.append(f"{law.family}: {seeds} seed(s), learning rate(s) {', '.join(f'{lr:g}' for lr in lrs) or '?'}")
    text = "Behind each frontier: " + "; ".join(parts) + "."
    if thin:
        text += " With one seed or a rate not tuned per family, read the winner as a first look, not a verdict."
    return text


def _safe_plot(make, name: str, notes: list[str]) -> Path | None:
    try:
        return make()
    except Exception as error:  # one broken figure must not cost the rest of the report
        notes.append(f"- plot `{name}` failed: {type(error).__name__}: {error}")
        traceback.print_exc()
        return None


def _plots(runs, laws, loss, metric, axes, out: Path, notes: list[str]) -> list[tuple[str, Path]]:
    figures: list[tuple[str, Path | None]] = []
    keys = [k for k in dict.fromkeys([loss, "eval/accuracy", metric]) if k in runs and runs[k].notna().any()]
    for key in keys:
        name = f"{slug(key)}_vs_compute.png"
        figures.append(
            (
                f"{key} against compute",
                _safe_plot(lambda k=key, n=name: save_png(out / n, draw_vs_compute, runs, k, laws), name, notes),
            )
        )
    name = f"{slug(loss)}_vs_params.png"
    figures.append(
        (
            f"{loss} against parameters",
            _safe_plot(lambda: save_png(out / name, draw_vs_params, laws, loss), name, notes),
        )
    )
    for axis in plot_axes(runs, axes):
        name = f"{slug(metric)}_vs_{slug(axis)}.png"
        figures.append(
            (
                f"{metric} against {axis}",
                _safe_plot(lambda a=axis, n=name: save_png(out / n, draw_vs_axis, runs, a, metric, axes), name, notes),
            )
        )
    return [(title, path) for title, path in figures if path is not None]


def write_report(
    sweep_dir: str | Path,
    *,
    metric: str | None = None,
    bootstrap: int = 200,
    chinchilla_bootstrap: int = 100,
    seed: int = 0,
    size: str = "params_non_embedding",
    fit_accuracy: bool = False,
) -> Path:
    """Write `sweep_dir/report.md` and its PNG figures; returns the report's path. `bootstrap` and
    `chinchilla_bootstrap` are the resample counts behind the laws' intervals (0: point estimates only; the
    power laws' diagnoses still run their own). `size` is the N of the laws; accuracy-type metrics are
    plotted, and fitted with a loss law only when `fit_accuracy`."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    if runs.empty:
        path = sweep_dir / "report.md"
        path.write_text(
            f"# Sweep report: {sweep_dir.name}\n\nNo run directories (with a config.json) under `{sweep_dir}`.\n"
        )
        return path
    metric = metric or main_metric(runs)
    if metric not in runs:
        known = sorted(c for c in runs if "/" in c)
        raise ValueError(f"metric {metric!r} is not a column of these runs; metrics present: {known}")
    runs, derived = with_derived_axes(runs)
    axes = varied_axes(runs, sweep_dir) + derived
    loss = loss_column(runs)
    fit = dict(size=size, bootstrap=bootstrap, chinchilla_bootstrap=chinchilla_bootstrap, seed=seed)
    laws = fit_laws(runs, loss=loss, **fit)
    accuracy = [
        k for k in dict.fromkeys([metric, "eval/accuracy"]) if k in runs and is_accuracy(k) and runs[k].notna().any()
    ]
    if fit_accuracy:
        for key in accuracy:
            laws += fit_laws(runs, loss=key, fit_accuracy=True, kinds=("compute", "params"), **fit)
        accuracy = []
    notes: list[str] = []
    figures = _plots(runs, laws, loss, metric, axes, sweep_dir, notes)
    lines = _header(runs, sweep_dir, metric, axes)
    lines += (
        _runs_table(runs, metric)
        + _best_runs(runs, metric)
        + _laws_section(laws, bootstrap, chinchilla_bootstrap, size, accuracy)
    )
    lines += ["## Plots", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    family_only = [a for a in axes if a not in plot_axes(runs, axes)]
    if family_only:
        lines += [
            "Not plotted on their own (constant within each family, so the family legend shows them, "
            "or replicate seeds): " + ", ".join(f"`{a}`" for a in family_only) + ".",
            "",
        ]
    if notes:
        lines += ["Plots not drawn:", ""] + notes + [""]
    (sweep_dir / "laws.json").write_text(json.dumps([law.to_dict() for law in laws], indent=1, default=float))
    path = sweep_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
