"""What the memory-model protocol's runs measure (memlab/studies/memory_models/protocol.py):

information  the memory probe (memlab.probes.memory_info) on each encoder: the autoencoder's, the causal LM's
             trunk at its penultimate position, a fresh encoder of the autoencoder's config, and each clm-only and
             combined memory model's; every probe reads 16-byte windows (the memory models' chunks) and shares
             one CE_null, the constant control's.
memory       each memory-model run at its condition's learning rate: its loss on chunks after the first, its copy
             Hamming (argmax regeneration of blanked chunks from earlier memories; runs not trained on the copy
             are scored on it after training), and its encoder's probe.
curriculum   training FLOPs to copy Hamming 0.9, read from the eval curves (log-FLOPs interpolation between the
             evaluations around the crossing), for the frozen-encoder curriculum and the combined model from
             scratch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memlab.probes.memory_info import probe_memory
from memlab.studies.memory_models.protocol import COPY, Scale, autoencoder_dir, lm_dir
from memlab.studies.slot_memory.efficiency import eval_points, target_bracket
from memlab.train.evaluate import evaluate_run

COPY_METRIC = f"eval/accuracy/{COPY}"
TARGET = 0.9  # copy Hamming whose compute the curriculum comparison reads


def probe(runs: Path, scale: Scale, run_dir: Path, label: str, encoder: str = "run", ce_null=None) -> dict:
    """The memory probe of one encoder, trained under runs/probes/<label> (read back once done)."""
    overrides = [f"data.seq_len={scale.chunk_len}"]  # an LM's window is its training length: probe the chunks
    return probe_memory(
        run_dir,
        encoder,
        steps=scale.probe_steps,
        workdir=runs / "probes" / label,
        overrides=overrides,
        ce_null=ce_null,
    )


def information(runs: Path, scale: Scale, memory: pd.DataFrame) -> pd.DataFrame:
    """One row per probed encoder: kind, seed, CE, CE_null, I_e, I_e', Hamming."""
    ae = autoencoder_dir(runs)
    constant = probe(runs, scale, ae, "constant", "constant")
    null = constant["ce"]
    encoders = [("autoencoder", 0, ae, "run"), ("causal LM", 0, lm_dir(runs), "run"), ("untrained", 0, ae, "untrained")]
    for _, row in memory[memory["condition"].isin(["clm", "combined"])].iterrows():
        encoders.append((f"memory model, {row['condition']}", int(row["train.seed"]), Path(row["run_dir"]), "run"))
    rows = [{"encoder": "constant", "seed": 0, **_info(constant)}]
    for kind, seed, run_dir, encoder in encoders:
        label = f"{kind.replace('memory model, ', 'memory-').replace(' ', '-')}-seed{seed}"
        rows.append({"encoder": kind, "seed": seed, **_info(probe(runs, scale, run_dir, label, encoder, null))})
    return pd.DataFrame(rows)


def _info(info: dict) -> dict:
    return {k: info[k] for k in ("ce", "ce_null", "I_e", "I_e_calibrated", "hamming")}


def copy_hamming(row: pd.Series, scale: Scale) -> float:
    """Copy Hamming of a run: its own eval's when it trained on the copy, else its checkpoint scored on it."""
    if row.get(f"objective.{COPY}", 0.0) > 0 and COPY_METRIC in row and pd.notna(row[COPY_METRIC]):
        return float(row[COPY_METRIC])
    return evaluate_run(row["run_dir"], [f"objective.{COPY}={scale.copy_weight}"])[COPY_METRIC]


def memory_table(memory: pd.DataFrame, scale: Scale) -> pd.DataFrame:
    """One row per memory-model run: condition, seed, lr, loss on later chunks, copy Hamming, FLOPs."""
    return pd.DataFrame(
        {
            "condition": memory["condition"],
            "seed": memory["train.seed"].astype(int),
            "lr": memory["train.lr"],
            "later_chunks_loss": memory["eval/later_chunks_loss"],
            "copy_hamming": [copy_hamming(r, scale) for _, r in memory.iterrows()],
            "flops": memory["flops"],
            "run_dir": memory["run_dir"],
        }
    )


def curriculum_table(memory: pd.DataFrame, autoencoder_flops: float) -> pd.DataFrame:
    """FLOPs to copy Hamming TARGET for each curriculum and combined run (NaN: never reached; `reached_below`
    then bounds it from below), with the autoencoder's FLOPs added for the curriculum."""
    rows = []
    for _, row in memory[memory["condition"].isin(["curriculum", "combined"])].iterrows():
        low, estimate, high = target_bracket(row["curve"], TARGET, COPY_METRIC)
        points = eval_points(row["curve"], COPY_METRIC)
        pre = autoencoder_flops if row["condition"] == "curriculum" else 0.0
        rows.append(
            {
                "condition": row["condition"],
                "seed": int(row["train.seed"]),
                "flops_to_target": estimate,
                "bracket_low": low,
                "bracket_high": high,
                "flops_to_target_with_autoencoder": estimate + pre,
                "best_copy_hamming": float(points[COPY_METRIC].max()) if len(points) else float("nan"),
                "run_flops": float(row["flops"]),
            }
        )
    return pd.DataFrame(rows)


def draw_copy_curves(path: Path, memory: pd.DataFrame) -> Path:
    """Copy Hamming against training FLOPs, one line per run, coloured by condition."""
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"combined": "tab:blue", "curriculum": "tab:green", "clm": "tab:red", "none": "tab:gray"}
    for _, row in memory.iterrows():
        points = eval_points(row["curve"], COPY_METRIC)
        if len(points):
            label = f"{row['condition']} (seed {int(row['train.seed'])})"
            ax.plot(points["flops"], points[COPY_METRIC], "o-", ms=3, color=colors[row["condition"]], label=label)
    ax.axhline(TARGET, color="black", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="copy Hamming (eval)", title="Retention during training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
