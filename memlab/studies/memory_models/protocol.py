"""The protocol for Badger's memory-model claims (arXiv 2602.13466; research notes A.3): how much of its input an
embedding holds, by encoder kind; what the retention objective does to a memory model's memories; and whether a
frozen autoencoder encoder with a copy-first curriculum gets to faithful recall in less compute.

Stages (memlab.sweep.stages), each a sweep whose runs live under `<runs>/<sweep name>/`:
  encoders  the unrolled autoencoder (mode autoencoder) and a causal LM of the encoder's architecture on the same
            text, the encoders the probe compares (with an untrained one and a constant control, memory_info.py)
  lr        a search: the memory models on their first seed at every learning rate, extended past an edge:
            clm (next-token only), combined (next-token + copy_weight x blank copy, Badger's 1 : 0.5 per-token
            weighting), none (no-memory decoder, the floor) and curriculum (the frozen autoencoder encoder, blank
            copy for the first curriculum_steps, then combined)
  seeds     the other seeds, each condition at its own learning rate (the lowest final eval loss of its objective;
            the no-memory floor and clm-only by their loss on chunks after the first, which is what they train)

Every run of one scale shares the data (stdlib bytes in n chunks of L), the widths and the step budget; the
curriculum's runs count only their own FLOPs (the autoencoder's are reported beside them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from memlab.data.prepare import prepare
from memlab.sweep import Sweep, points
from memlab.sweep.search import MAX_EXTENSIONS
from memlab.sweep.stages import Search, Stage, Study

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"
COPY = "next_token@blank_copy"
CONDITIONS = {  # memory-model conditions: (experiment, overrides)
    "clm": ("memory_model.py", {f"objective.{COPY}": 0.0}),
    "combined": ("memory_model.py", {}),  # the copy weight comes from the scale
    "none": ("memory_model.py", {"model.memory": "none", f"objective.{COPY}": 0.0}),
    "curriculum": ("memory_curriculum.py", {}),
}
SWEEP_SUFFIX = {"memory_model.py": "", "memory_curriculum.py": "-curriculum"}  # a stage's sweep per experiment
# what picks each condition's learning rate: the loss of what it trains
LR_METRIC = {
    "clm": "eval/later_chunks_loss",
    "none": "eval/later_chunks_loss",
    "combined": "eval/loss",
    "curriculum": "eval/loss",
}


@dataclasses.dataclass(frozen=True)
class Scale:
    """One setting: the chunks, the widths and the budgets."""

    chunk_len: int  # L
    num_chunks: int  # n
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    batch: int
    autoencoder_steps: int
    lm_steps: int
    memory_steps: int  # every memory-model condition, the curriculum's copy phase included
    curriculum_steps: int  # the copy phase of the curriculum
    copy_weight: float
    lrs: tuple[float, ...]  # tried on the first seed of each memory condition
    seeds: tuple[int, ...]
    probe_steps: int
    encoder_lr: float = 2e-3  # the autoencoder's and the LM's
    eval_every: int = 100
    eval_examples: int = 256
    lr_extensions: int = MAX_EXTENSIONS  # how far a learning-rate search may go past its grid


SCALES = {
    # 2-core CPU: 4 chunks of 16 bytes (64 bytes into d = 128 did not autoencode in a CPU budget: research notes
    # A.3 say to shrink the window first), 2 + 2 attention layers; each run a few minutes
    "cpu": Scale(
        chunk_len=16,
        num_chunks=4,
        d_model=128,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        batch=16,
        autoencoder_steps=3000,
        lm_steps=2000,
        memory_steps=3000,
        curriculum_steps=1000,
        copy_weight=0.5,
        lrs=(1e-3, 3e-3),
        seeds=(0, 1),
        probe_steps=1000,
    ),
    # the anchor's proportions at a size an accelerator trains in hours
    "paper": Scale(
        chunk_len=64,
        num_chunks=4,
        d_model=512,
        heads=8,
        encoder_layers=8,
        decoder_layers=8,
        batch=32,
        autoencoder_steps=40_000,
        lm_steps=40_000,
        memory_steps=40_000,
        curriculum_steps=20_000,
        copy_weight=0.5,
        lrs=(2e-4, 6e-4),
        seeds=(0, 1, 2),
        probe_steps=20_000,
        encoder_lr=2e-4,
        eval_every=1000,
        eval_examples=1024,
    ),
}


def corpus(runs: Path) -> Path:
    """The stdlib byte corpus every run reads (prepared once, under the runs directory)."""
    return prepare("stdlib", runs / "stdlib", tokenizer="byte", progress=False).directory


def _common(scale: Scale) -> dict:
    return {
        "model.d_model": scale.d_model,
        "model.num_heads": scale.heads,
        "model.qkv_conv": True,
        "train.batch_size": scale.batch,
        "train.warmup_fraction": 0.05,
        "train.eval_every": scale.eval_every,
        "train.checkpoint_every": 500,
        "eval.num_examples": scale.eval_examples,
        "eval.batch_size": min(64, scale.eval_examples),
        "logging.wandb_mode": "offline",
        "logging.progress": False,
    }


def _chunks(scale: Scale, text: Path) -> dict:
    return {
        **_common(scale),
        "data.path": str(text),
        "data.num_chunks": scale.num_chunks,
        "data.chunk_len": scale.chunk_len,
        "model.encoder_layers": scale.encoder_layers,
        "model.num_layers": scale.decoder_layers,
    }


def autoencoder_sweep(scale: Scale, text: Path) -> Sweep:
    """The unrolled autoencoder on the memory models' chunks (its encoder is the curriculum's)."""
    return Sweep(
        name="autoencoder",
        experiment=str(EXPERIMENTS / "memory_autoencoder.py"),
        base={**_chunks(scale, text), "train.steps": scale.autoencoder_steps, "train.lr": scale.encoder_lr},
        points=points({"@model": "autoencoder"}),
    )


def lm_sweep(scale: Scale, text: Path) -> Sweep:
    """A causal LM whose trunk is the encoder's architecture, on windows of the memory models' examples."""
    return Sweep(
        name="lm",
        experiment=str(EXPERIMENTS / "text_lm.py"),
        base={
            **_common(scale),
            "data.path": str(text),
            "data.seq_len": scale.num_chunks * scale.chunk_len,
            "data.packing": "concat",
            "model.num_layers": scale.encoder_layers,
            "train.steps": scale.lm_steps,
            "train.lr": scale.encoder_lr,
        },
        points=points({"@model": "lm"}),
    )


def autoencoder_dir(runs: Path) -> Path:
    return runs / "autoencoder" / "autoencoder"  # a sweep of one point names its run after itself


def lm_dir(runs: Path) -> Path:
    return runs / "lm" / "lm"


def _memory_sweep(name: str, experiment: str, scale: Scale, text: Path, runs: Path, rows: list[dict]) -> Sweep:
    def derive(point: dict) -> dict:
        condition = point["@condition"]
        start = {"train.init_from": str(autoencoder_dir(runs)), "train.curriculum_steps": scale.curriculum_steps}
        return {**CONDITIONS[condition][1], **(start if condition == "curriculum" else {})}

    return Sweep(
        name=name,
        experiment=str(EXPERIMENTS / experiment),
        base={**_chunks(scale, text), "train.steps": scale.memory_steps, f"objective.{COPY}": scale.copy_weight},
        points=rows,
        derive=derive,
    )


def memory_sweeps(stage: str, scale: Scale, text: Path, runs: Path, rows: list[dict]) -> Iterator[Sweep]:
    """The rows as sweeps, one per experiment file their conditions use (a sweep has one): `stage` for the
    memory_model.py conditions, `stage`-curriculum for the curriculum's."""
    for experiment in SWEEP_SUFFIX:
        mine = [r for r in rows if CONDITIONS[r["@condition"]][0] == experiment]
        if mine:
            yield _memory_sweep(stage + SWEEP_SUFFIX[experiment], experiment, scale, text, runs, mine)


def seed_rows(scale: Scale, lrs: dict[str, float]) -> list[dict]:
    return [{"@condition": c, "train.lr": lrs[c], "train.seed": s} for c in CONDITIONS for s in scale.seeds[1:]]


def condition_of(row: pd.Series) -> str:
    """A memory-model run's condition, read from its config."""
    if row.get("train.curriculum_steps", 0):
        return "curriculum"
    if row.get("model.memory", "read") == "none":
        return "none"
    return "combined" if row.get(f"objective.{COPY}", 0.0) > 0 else "clm"


def score(row: pd.Series) -> tuple:
    """A learning rate's score: the lower final value of its condition's LR_METRIC."""
    value = row.get(LR_METRIC[condition_of(row)])
    return (-(math.inf if pd.isna(value) else float(value)),)


LR_STAGES = tuple("lr" + suffix for suffix in SWEEP_SUFFIX.values())
SEED_STAGES = tuple("seeds" + suffix for suffix in SWEEP_SUFFIX.values())


def stages(scale: Scale) -> list:
    """The stages in order: the curriculum starts from the finished autoencoder, the seeds from the rates the
    lr search chose."""
    stages = [
        Stage("autoencoder", lambda study: [autoencoder_sweep(scale, corpus(study.runs))]),
        Stage("lm", lambda study: [lm_sweep(scale, corpus(study.runs))]),
        Search(
            name="lr",
            knob="train.lr",
            grid=scale.lrs,
            group_key="@condition",
            groups=tuple(CONDITIONS),
            sweeps=lambda study, rows: list(memory_sweeps("lr", scale, corpus(study.runs), study.runs, rows)),
            group_of=condition_of,
            score=score,
            max_extensions=scale.lr_extensions,
            rule="the lowest final loss of what the condition trains ("
            + ", ".join(f"{c}: {m}" for c, m in LR_METRIC.items())
            + ")",
        ),
    ]
    seeds = Stage(
        "seeds",
        lambda study: list(
            memory_sweeps("seeds", scale, corpus(study.runs), study.runs, seed_rows(scale, study.choice("lr")))
        ),
        after=("lr",),
    )
    return stages + ([seeds] if len(scale.seeds) > 1 else [])  # only where there are seeds beyond the first


def memory_runs(study: Study) -> pd.DataFrame:
    """Every memory-model run at its condition's chosen learning rate: the first seed's (lr stage) and the
    others' (seed stage), with its `condition` (curves loaded)."""
    lrs = study.choice("lr")
    names = [*LR_STAGES, *(SEED_STAGES if any(s.name == "seeds" for s in study.stages) else ())]
    out = study.frame(*names, curves=True)
    out = out.assign(condition=[condition_of(r) for _, r in out.iterrows()])
    chosen = [math.isclose(lrs[c], lr) for c, lr in zip(out["condition"], out["train.lr"], strict=True)]
    return out[chosen].sort_values(["condition", "train.seed"]).reset_index(drop=True)
