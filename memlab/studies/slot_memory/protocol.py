"""The fair protocol for "slots reach the target answer accuracy with less training compute": which runs it takes.

Four families read the same contexts at matched parameters (within 10%): the slot memory; the full encoder-decoder
(self-attention over the context); the encoder-decoder without an encoder (`encdec-noenc`: the decoder
cross-attends to the context's embeddings after the short conv, the reading the slots start from); the
decoder-only LM over [context; question; answer]. All start from the same tricks (`copy_init`, tied head, q/k/v
convs where attention is causal), and every family that reads a context projects its keys and values once.

The task is built to need compression: hard negatives (distractors drawn from the key and value tokens, so every
span looks like a fact), facts >= k, a quarter of the questions composed of two facts, questions drawn without
replacement, exact match of whole answers as the metric.

Stages, each a sweep whose runs live under `<runs>/<sweep name>/`:
  lr     every family at the base size, one seed, each learning rate; the family's rate is its best final
         exact match (ties: lowest final eval loss)
  seeds  the other seeds at the chosen rate
  sizes  the other model widths at the chosen rate, first seed
  grid   k x L/k for the slot memory, the encoder-free baseline at each L (the "gain ~ L/k" intuition)
Every run of the first three stages trains to the same compute budget (`@flops`: its cosine schedule ends there),
so final accuracies compare at equal compute and every evaluation lies on its family's compute frontier.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from memlab.analysis.runs import load_runs
from memlab.config import load_module
from memlab.errors import MemlabError
from memlab.sweep import Sweep, grid

EXPERIMENT = str(Path(__file__).resolve().parents[3] / "experiments" / "context_qa.py")
DEPTH = load_module(Path(EXPERIMENT)).DEPTH  # decoder layers that match parameters at equal width
FAMILIES = {
    "slot_memory": {"model.name": "slot_memory", "model.num_layers": DEPTH["slot_memory"]},
    "encdec": {"model.name": "encdec", "model.encoder_layers": 3, "model.num_layers": DEPTH["encdec"]},
    # no encoder: its 3 layers (~16 d^2 each) go to 2 more decoder layers (~20 d^2 each)
    "encdec-noenc": {"model.name": "encdec", "model.encoder_layers": 0, "model.num_layers": DEPTH["encdec"] + 2},
    "lm": {"model.name": "lm", "model.num_layers": DEPTH["lm"]},
}
SLOT, FAIR_BASELINE = "slot_memory", "encdec-noenc"


@dataclasses.dataclass(frozen=True)
class Scale:
    """One setting of the protocol: the task at the claim's L/k, the ladder, the budget and the target."""

    context_len: int
    slots: int
    facts: int
    widths: tuple[int, ...]  # d_model; the first is the base size
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    budget: float  # training FLOPs every run of the lr / seeds / sizes stages is scheduled to spend
    target: float  # exact match the compute-to-target reads
    grid_slots: tuple[int, ...]
    grid_ratios: tuple[int, ...]
    grid_steps: int
    questions: int = 8
    compose_fraction: float = 0.25
    evals: int = 20  # evaluations over each schedule
    eval_examples: int = 256


SCALES = {
    # 2-core CPU: L = 128, k = 8 (the seed's L/k = 16 at a quarter of its L), about an hour of runs at --parallel 2
    "cpu": Scale(
        context_len=128,
        slots=8,
        facts=8,
        widths=(64, 32, 128),
        lrs=(1e-3, 3e-3, 1e-2),
        seeds=(0, 1, 2),
        budget=4e12,
        target=0.5,
        grid_slots=(4, 8),
        grid_ratios=(4, 8, 16, 32),
        grid_steps=1000,
    ),
    # the seed's setting (L = 512, k = 32) with room to learn: accelerator-sized, not run on the CPU
    "paper": Scale(
        context_len=512,
        slots=32,
        facts=32,
        widths=(128, 64, 256),
        lrs=(3e-4, 1e-3, 3e-3),
        seeds=(0, 1, 2),
        budget=2e15,
        target=0.9,
        grid_slots=(8, 16, 32, 64),
        grid_ratios=(4, 8, 16, 32),
        grid_steps=5000,
        eval_examples=1024,
    ),
}


def family_of(row: pd.Series) -> str:
    """A run's family in the protocol's terms (the encoder-free encoder-decoder is its own family)."""
    name = row.get("model.name")
    if name == "encdec" and row.get("model.encoder_layers") == 0:
        return "encdec-noenc"
    return str(name)


def _task(scale: Scale, context_len: int, slots: int, facts: int) -> dict:
    return {
        "data.context_len": context_len,
        "data.num_facts": facts,
        "data.questions_per_context": min(scale.questions, facts),
        "data.distractors": "hard",
        "data.compose_fraction": scale.compose_fraction,
        "model.num_slots": slots,
    }


def _base(scale: Scale) -> dict:
    return {
        "train.checkpoint_every": 500,
        "train.warmup_steps": 50,  # short schedules (the LM gets ~250 steps of the cpu budget) still warm up
        "eval.num_examples": scale.eval_examples,
        "logging.wandb_mode": "offline",
        "logging.progress": False,
        **_task(scale, scale.context_len, scale.slots, scale.facts),
    }


def _derive(point: dict) -> dict:
    return FAMILIES[point["@family"]]


def _budgeted(name: str, scale: Scale, points: list[dict]) -> Sweep:
    """Runs whose schedules end at the scale's compute budget."""
    points = [{**p, "@flops": scale.budget, "@evals": scale.evals} for p in points]
    return Sweep(name=name, experiment=EXPERIMENT, base=_base(scale), points=points, derive=_derive)


def lr_sweep(scale: Scale) -> Sweep:
    return _budgeted(
        "lr",
        scale,
        grid({"@family": list(FAMILIES), "train.lr": list(scale.lrs), "model.d_model": [scale.widths[0]]}),
    )


def seed_sweep(scale: Scale, lrs: dict[str, float]) -> Sweep:
    points = [
        {"@family": f, "train.lr": lrs[f], "train.seed": s, "model.d_model": scale.widths[0]}
        for f in FAMILIES
        for s in scale.seeds[1:]
    ]
    return _budgeted("seeds", scale, points)


def size_sweep(scale: Scale, lrs: dict[str, float]) -> Sweep:
    points = [
        {"@family": f, "train.lr": lrs[f], "train.seed": scale.seeds[0], "model.d_model": d}
        for f in FAMILIES
        for d in scale.widths[1:]
    ]
    return _budgeted("sizes", scale, points)


def grid_sweep(scale: Scale, lrs: dict[str, float]) -> Sweep:
    """Slots at every (k, L/k) with facts = k (>= k, as asked); the encoder-free baseline on the same task at
    every (L, facts) they reach, so each slot run has a baseline that saw exactly its task."""
    slot_points = [{"@family": SLOT, "@k": k, "@ratio": r} for k in scale.grid_slots for r in scale.grid_ratios]
    tasks = sorted({(k * r, k) for k in scale.grid_slots for r in scale.grid_ratios})
    base_points = [{"@family": FAIR_BASELINE, "@L": length, "@facts": facts} for length, facts in tasks]

    def derive(point: dict) -> dict:
        length = point["@L"] if "@L" in point else point["@k"] * point["@ratio"]
        facts = point.get("@facts", point.get("@k"))
        return {
            **FAMILIES[point["@family"]],
            **_task(scale, length, point.get("@k", scale.slots), facts),
            "train.lr": lrs[point["@family"]],
        }

    return Sweep(
        name="grid",
        experiment=EXPERIMENT,
        base={
            **_base(scale),
            "model.d_model": scale.widths[0],
            "train.steps": scale.grid_steps,
            "train.eval_every": max(1, scale.grid_steps // scale.evals),
        },
        points=slot_points + base_points,
        derive=derive,
    )


def load_stage(runs: Path, stage: str) -> pd.DataFrame:
    """The completed runs of one stage, with their protocol family; an error naming the others."""
    frame = load_runs(runs / stage, curves=True)  # the report reads each curve several times
    if frame.empty:
        raise MemlabError(f"no runs under {runs / stage}: run the stage '{stage}' first")
    bad = frame[frame["status"] != "completed"]
    if len(bad):
        raise MemlabError(f"stage '{stage}': runs not completed: {', '.join(bad['run'])} (under {runs / stage})")
    frame = frame.copy()
    frame["family"] = [family_of(row) for _, row in frame.iterrows()]
    return frame


def chosen_lrs(frame: pd.DataFrame) -> dict[str, float]:
    """Each family's learning rate: best final exact match, ties broken by the lowest final eval loss."""
    out = {}
    for family, group in frame.groupby("family"):
        score = group["eval/exact_match"].fillna(-1.0).round(4)
        loss = group["eval/loss"].fillna(math.inf)
        best = group.assign(_s=-score, _l=loss).sort_values(["_s", "_l"]).iloc[0]
        out[str(family)] = float(best["train.lr"])
    missing = sorted(set(FAMILIES) - set(out))
    if missing:
        raise MemlabError(f"the lr stage has no completed runs of {', '.join(missing)}")
    return out


def sweeps(scale: Scale, runs: Path) -> Iterator[Sweep]:
    """The stages in order; later stages read the learning rates the first one chose, so this is consumed lazily:
    each sweep is launched (and finished) before the next is asked for."""
    first = lr_sweep(scale)
    yield first
    lrs = chosen_lrs(load_stage(runs, first.name))
    yield seed_sweep(scale, lrs)
    yield size_sweep(scale, lrs)
    yield grid_sweep(scale, lrs)
