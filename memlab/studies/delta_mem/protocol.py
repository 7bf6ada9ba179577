"""The protocol for "a tiny online delta-rule state per attention layer gives a frozen LM memory it did not have".

A backbone LM is trained with its attention limited to block windows of W tokens, on stdlib text mixed with
in-window fact recall, then frozen. Episodes of several windows put facts in earlier windows, among text, and ask
for one of them in the last window: beyond the backbone's attention, within reach of a state that spans the
episode. Adapters train on those episodes with the backbone frozen (`train.init_from` + `train.trainable`):

  lora   LoRA r on the query and output projections, no memory (the adapter-capacity control)
  tsw    δ-mem, one r x r state written every token
  ssw    δ-mem, one write per window from its mean hidden state
  msw    δ-mem, four state heads written every token

with answer cross-entropy (+ 0.01 (mean beta - 0.05)^2 for δ-mem, the anchor's regulariser). The oracle is a
backbone of the same size trained with attention over the whole episode. Each adapter kind gets its own learning
rate (best final exact match of the first seed), then more seeds at it.

Stages (memlab.sweep.stages), each a sweep whose runs live under `<runs>/<sweep name>/`:
  backbones  the windowed backbone and the whole-episode oracle
  lr         a search: every adapter kind at every learning rate, first seed, extended past an edge
  seeds      the other seeds at each kind's rate
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from memlab.data.prepare import prepare
from memlab.sweep import Sweep, points
from memlab.sweep.search import MAX_EXTENSIONS
from memlab.sweep.stages import Search, Stage, Study, exact_match_score

EXPERIMENT = str(Path(__file__).resolve().parents[3] / "experiments" / "window_recall.py")
ADAPTERS = {
    "lora": {"model.lora_rank": 8, "train.trainable": (".*lora/",)},
    "tsw": {"model.delta_mem": "tsw", "train.trainable": (".*delta_mem/",)},
    "ssw": {"model.delta_mem": "ssw", "train.trainable": (".*delta_mem/",)},
    "msw": {"model.delta_mem": "msw", "train.trainable": (".*delta_mem/",)},
}
BACKBONES = {
    "backbone": {"data.fact_distance": 0},  # windowed attention; recall inside its window
    "oracle": {"data.fact_distance": -1, "model.attention_window": 0},  # attention over the whole episode
}
BETA_WEIGHT = 0.01  # the anchor's write regulariser: 0.01 (mean beta - 0.05)^2


@dataclasses.dataclass(frozen=True)
class Scale:
    """One setting: the episodes, the backbone and the adapter budgets."""

    window: int  # W: the backbone's attention window and the episode's window length
    windows: int  # windows per episode
    facts: int  # facts per episode in the headline condition
    d_model: int
    layers: int
    heads: int
    backbone_steps: int
    oracle_steps: int  # recall across windows takes attention over the whole episode longer to learn
    adapter_steps: int
    batch: int
    lrs: tuple[float, ...]  # adapter learning rates tried on the first seed
    seeds: tuple[int, ...]
    text_fraction: float = 0.5  # share of plain text examples in the backbone's training data
    eval_examples: int = 512
    fact_counts: tuple[int, ...] = (1, 2, 4, 8, 16)
    lr_extensions: int = MAX_EXTENSIONS  # how far a learning-rate search may go past its grid


SCALES = {
    # 2-core CPU: 4 windows of 32 tokens, a 2-layer d=64 backbone; each run a few minutes
    "cpu": Scale(
        window=32,
        windows=4,
        facts=4,
        d_model=64,
        layers=2,
        heads=4,
        backbone_steps=1500,
        oracle_steps=4500,
        adapter_steps=800,
        batch=32,
        lrs=(3e-3, 1e-2),
        seeds=(0, 1),
        fact_counts=(1, 2, 4, 8),  # a 32-token window holds at most 10 three-token facts
    ),
    # the anchor's proportions (a 4k-token prompt window, 8k of history) are accelerator-sized: a larger analogue
    "paper": Scale(
        window=128,
        windows=8,
        facts=4,
        d_model=256,
        layers=4,
        heads=8,
        backbone_steps=6000,
        oracle_steps=18000,
        adapter_steps=3000,
        batch=64,
        lrs=(1e-3, 3e-3, 1e-2),
        seeds=(0, 1, 2),
        eval_examples=1024,
    ),
}


def corpus(runs: Path) -> Path:
    """The stdlib corpus the episodes take their text from (prepared once, under the runs directory)."""
    return prepare("stdlib", runs / "stdlib", tokenizer="byte", progress=False).directory


def episode(scale: Scale, text: Path, *, distance: int = -1, facts: int | None = None) -> dict:
    """Data knobs of an episode: facts `distance` windows before the last (0: inside it; -1: any earlier one)."""
    return {
        "data.window": scale.window,
        "data.num_windows": scale.windows,
        "data.num_facts": scale.facts if facts is None else facts,
        "data.fact_distance": distance,
        "data.filler": "text",
        "data.text_path": str(text),
    }


def _base(scale: Scale, text: Path) -> dict:
    return {
        "model.d_model": scale.d_model,
        "model.num_layers": scale.layers,
        "model.num_heads": scale.heads,
        "model.attention_window": scale.window,
        "train.batch_size": scale.batch,
        "train.eval_every": 100,
        "train.checkpoint_every": 500,
        "eval.num_examples": scale.eval_examples,
        "eval.batch_size": min(64, scale.eval_examples),
        "logging.wandb_mode": "offline",
        "logging.progress": False,
        **episode(scale, text),
    }


def backbone_sweep(scale: Scale, text: Path) -> Sweep:
    """The windowed backbone (facts inside the last window, text mixed in) and the oracle (attention over the
    whole episode, facts anywhere)."""
    mixed = {"data.text_fraction": scale.text_fraction, "train.steps": scale.backbone_steps}
    return Sweep(
        name="backbones",
        experiment=EXPERIMENT,
        base={**_base(scale, text), **mixed, "objective.next_token": 1.0},
        points=points({"@model": "backbone"}, {"@model": "oracle"}),
        derive=lambda point: {
            **BACKBONES[point["@model"]],
            **({"train.steps": scale.oracle_steps} if point["@model"] == "oracle" else {}),
        },
    )


def backbone_dir(runs: Path) -> Path:
    return runs / "backbones" / "model=backbone"


def _adapter_sweep(name: str, scale: Scale, text: Path, runs: Path, rows: list[dict]) -> Sweep:
    def derive(point: dict) -> dict:
        kind = point["@adapter"]
        beta = {"objective.delta_mem_beta": BETA_WEIGHT} if kind != "lora" else {}
        return {**ADAPTERS[kind], **beta}

    return Sweep(
        name=name,
        experiment=EXPERIMENT,
        base={
            **_base(scale, text),
            "train.steps": scale.adapter_steps,
            "train.weight_decay": 0.0,  # as the anchor trains its adapters
            "train.init_from": str(backbone_dir(runs)),
        },
        points=rows,
        derive=derive,
    )


def lr_sweep(scale: Scale, text: Path, runs: Path, rows: list[dict]) -> Sweep:
    return _adapter_sweep("lr", scale, text, runs, rows)


def seed_sweep(scale: Scale, text: Path, runs: Path, lrs: dict[str, float]) -> Sweep:
    rows = [{"@adapter": a, "train.lr": lrs[a], "train.seed": s} for a in ADAPTERS for s in scale.seeds[1:]]
    return _adapter_sweep("seeds", scale, text, runs, rows)


def adapter_of(row: pd.Series) -> str:
    return "lora" if row.get("model.lora_rank", 0) else str(row.get("model.delta_mem"))


def stages(scale: Scale) -> list:
    """The stages in order: the adapters start from the finished backbone, the seeds from each kind's rate."""
    stages = [
        Stage("backbones", lambda study: [backbone_sweep(scale, corpus(study.runs))]),
        Search(
            name="lr",
            knob="train.lr",
            grid=scale.lrs,
            group_key="@adapter",
            groups=tuple(ADAPTERS),
            sweeps=lambda study, rows: [lr_sweep(scale, corpus(study.runs), study.runs, rows)],
            group_of=adapter_of,
            score=exact_match_score,
            max_extensions=scale.lr_extensions,
            rule="best final exact match, ties to the lower final eval loss",
        ),
    ]
    seeds = Stage(
        "seeds", lambda study: [seed_sweep(scale, corpus(study.runs), study.runs, study.choice("lr"))], after=("lr",)
    )
    return stages + ([seeds] if len(scale.seeds) > 1 else [])  # only where there are seeds beyond the first


def chosen_runs(study: Study) -> pd.DataFrame:
    """The lr stage's runs at each kind's chosen rate (its first seed), then the seeds stage's runs."""
    lr_stage, lrs = study.frame("lr"), study.choice("lr")
    keep = [math.isclose(run["train.lr"], lrs[adapter_of(run)]) for _, run in lr_stage.iterrows()]
    more = [study.frame("seeds")] if any(stage.name == "seeds" for stage in study.stages) else []
    return pd.concat([lr_stage[keep], *more])
