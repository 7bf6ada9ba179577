"""capacity.csv, capacity.md and capacity.png of a capacity study (see `capacity`)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memlab.analysis.tables import markdown_table, num

from .capacity import Study, crossing

THRESHOLDS = (0.9, 0.5)
SHOWN_RATIOS = (0.5, 1.0, 2.0, 4.0, 8.0)  # accuracy columns of the table, where measured
CLAIM = {"hebbian": 0.6, "delta": 0.9}  # "outer-product memory saturates around 60%, the delta rule passes 90%"
AROUND = 0.15  # "around 0.6" = within this of it (also the criterion of `memlab reproduce matrix-utilisation`)
_SHADES = {"delta": "Blues", "hebbian": "Oranges"}


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (rule, keys, passes, d): utilisation (N/d) at each threshold and accuracy/cosine at shown N/d."""
    rows = []
    for (rule, keys, passes, d), group in frame.groupby(["rule", "keys", "passes", "d"], sort=False):
        group = group.sort_values("n_over_d")
        ratios, accuracy = group["n_over_d"].to_numpy(), group["accuracy"].to_numpy()
        row = {"rule": rule, "keys": keys, "passes": passes, "d": d}
        row.update({f"util@{t:g}": crossing(ratios, accuracy, t) for t in THRESHOLDS})
        for r in SHOWN_RATIOS:
            at = group[(group["n_over_d"] - r).abs() < 1e-9]
            row[f"acc@{r:g}"] = float(at["accuracy"].iloc[0]) if len(at) else math.nan
            row[f"cos@{r:g}"] = float(at["cosine"].iloc[0]) if len(at) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def utilisation_text(value: float, top: float) -> str:
    if math.isinf(value):
        return f"> {top:g}"
    return "< smallest N/d" if math.isnan(value) else f"{value:.2f}"


def _table(table: pd.DataFrame, top: float) -> str:
    shown = [r for r in SHOWN_RATIOS if table[f"acc@{r:g}"].notna().any()]
    header = [
        "rule",
        "keys",
        "passes",
        "d",
        *(f"N/d at {t:.0%}" for t in THRESHOLDS),
        *(f"acc N/d={r:g}" for r in shown),
        *(f"cos N/d={r:g}" for r in shown[:2]),
    ]
    rows = [
        [
            r["rule"],
            r["keys"],
            r["passes"],
            r["d"],
            *(utilisation_text(r[f"util@{t:g}"], top) for t in THRESHOLDS),
            *(num(r[f"acc@{x:g}"], 3) for x in shown),
            *(num(r[f"cos@{x:g}"], 3) for x in shown[:2]),
        ]
        for _, r in table.iterrows()
    ]
    return markdown_table(header, rows)


def claim_holds(rule: str, utilisation: pd.Series) -> bool:
    """The claim's half for `rule` at every measured d: Hebbian utilisation around 0.6, delta at least 0.9."""
    if rule == "hebbian":
        return bool(utilisation.between(CLAIM[rule] - AROUND, CLAIM[rule] + AROUND).all())
    return bool((utilisation >= CLAIM[rule]).all())


def _claim(table: pd.DataFrame, top: float) -> list[str]:
    """The claim against the measured utilisation at 90% accuracy, one pass, for each key kind."""
    lines = [
        "## Claim: outer-product memory saturates around 60% utilisation, the delta rule passes 90%",
        "",
        f'Utilisation here: N/d at {THRESHOLDS[0]:.0%} recall accuracy, one pass; "around 0.6" is read as '
        f'{CLAIM["hebbian"] - AROUND:.2f}-{CLAIM["hebbian"] + AROUND:.2f} at every d, "passes 0.9" as at least 0.9 at '
        "every d.",
        "",
    ]
    one_pass = table[table["passes"] == table["passes"].min()]
    for (kind, rule), group in one_pass.groupby(["keys", "rule"], sort=False):
        values = group.set_index("d")[f"util@{THRESHOLDS[0]:g}"]
        holds = claim_holds(rule, values)
        found = ", ".join(f"d={d}: {utilisation_text(v, top)}" for d, v in values.items())
        lines.append(f"- {kind} keys, {rule}: {found} -> {'consistent with' if holds else 'does not match'} the claim")
    return lines + [""]


def plot(path: Path, frame: pd.DataFrame) -> Path:
    """Accuracy against N/d, one panel per key kind; colour family per rule (darker = larger d), solid lines one
    pass, dashed more passes; dotted horizontals at the thresholds."""
    kinds = list(dict.fromkeys(frame["keys"]))
    fig = Figure(figsize=(6.5 * len(kinds), 5.6))
    FigureCanvasAgg(fig)
    dims = sorted(frame["d"].unique())
    passes = sorted(frame["passes"].unique())
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), i + 1)
        for (rule, p, d), group in frame[frame["keys"] == kind].groupby(["rule", "passes", "d"]):
            shade = 0.45 + 0.5 * dims.index(d) / max(1, len(dims) - 1)
            group = group.sort_values("n_over_d")
            ax.plot(
                group["n_over_d"],
                group["accuracy"],
                color=matplotlib.colormaps[_SHADES[rule]](shade),
                linestyle="-" if p == passes[0] else "--",
                marker="os^"[dims.index(d) % 3],
                markersize=4,
                label=f"{rule}, {p} pass{'es' if p > 1 else ''}, d={d}",
            )
        for t in THRESHOLDS:
            ax.axhline(t, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        if frame["n_over_d"].nunique() <= 12:  # ticks at the measured N/d, printed plainly
            ax.set_xticks(sorted(frame["n_over_d"].round(6).unique()))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set(
            xlabel="stored pairs per key dimension N/d",
            ylabel="recall accuracy (nearest stored value)",
            ylim=(-0.02, 1.02),
            title=f"{kind} keys",
        )
        ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.07 + 0.025 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(path, dpi=120)
    return path


def write(out: Path, study: Study, frame: pd.DataFrame, wall_seconds: float) -> Path:
    """Write the three files into `out`; returns capacity.md."""
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "capacity.csv", index=False)
    png = plot(out / "capacity.png", frame)
    table = summary(frame)
    top = float(frame["n_over_d"].max())
    settings = ", ".join(f"{k}={v}" for k, v in asdict(study).items())
    lines = [
        "# Associative-memory capacity: delta rule vs Hebbian writes",
        "",
        f"- settings: {settings}",
        f"- wall time: {wall_seconds:.1f} s",
        "",
        "Each configuration writes N (key, value) pairs into a zero d x d matrix (`passes` times over the same "
        "pairs) and recalls every stored key; a recall is correct when its nearest stored value by cosine is "
        "its own. Utilisation at a threshold = the largest N/d whose accuracy is still at least the threshold "
        "(interpolated). `cos` = mean cosine between a recall and its own value (1 = exact recall). "
        "Correlated keys have mean pairwise cosine rho. With beta fixed, repeating a Hebbian write only scales "
        "the matrix, so its passes give identical curves (drawn on top of each other).",
        "",
        "## Utilisation and accuracy",
        "",
        _table(table, top),
        "",
        *_claim(table, top),
        f"![accuracy vs N/d]({png.name})",
        "",
    ]
    path = out / "capacity.md"
    path.write_text("\n".join(lines))
    return path
