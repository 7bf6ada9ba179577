"""The fair protocol for "slots reach the target answer accuracy with less training compute": which runs it takes.

Four families read the same contexts at matched parameters (within 10%): the slot memory; the full encoder-decoder
(self-attention over the context); the encoder-decoder without an encoder (`encdec-noenc`: the decoder
cross-attends to the context's embeddings after the short conv, the reading the slots start from); the
decoder-only LM over [context; question; answer]. All start from the same tricks (`copy_init`, tied head, q/k/v
convs where attention is causal), and every family that reads a context projects its keys and values once.

The task is built to need compression: hard negatives (distractors drawn from the key and value tokens, so every
span looks like a fact), facts >= k, a quarter of the questions composed of two facts, questions drawn without
replacement, exact match of whole answers as the metric.

Stages (memlab.sweep.stages), each a sweep whose runs live under `<runs>/<sweep name>/`:
  lr     a search: every family at the base size, one seed, each learning rate, extended past an edge; the
         family's rate is its best final exact match (ties: lowest final eval loss)
  seeds  the other seeds at the chosen rate
  sizes  the other model widths at the chosen rate, first seed
  grid   k x L/k for the slot memory, the encoder-free baseline at each L (the "gain ~ L/k" intuition)
Every run of the first three stages trains to the same compute budget (`@flops`: its cosine schedule ends there),
so final accuracies compare at equal compute and every evaluation lies on its family's compute frontier.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from memlab.config import load_module
from memlab.data.tasks.context_qa import token_ranges
from memlab.sweep import Sweep
from memlab.sweep.search import MAX_EXTENSIONS
from memlab.sweep.stages import Search, Stage, Study, exact_match_score

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
    vocab_size: int = 128  # a third of it are key ids: enough for the largest k of the grid (facts = k)
    lr_extensions: int = MAX_EXTENSIONS  # how far a learning-rate search may go past its grid


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
        vocab_size=256,  # 84 key ids: the grid's k = 64 (64 facts) needs 64; 128 gives 41
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
        "data.vocab_size": scale.vocab_size,
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


def lr_sweep(scale: Scale, rows: list[dict]) -> Sweep:
    return _budgeted("lr", scale, [{**row, "model.d_model": scale.widths[0]} for row in rows])


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


def chance_exact_match(row: pd.Series) -> float:
    """Exact match of a guess: every answer token drawn from the value range (single-fact questions)."""
    low, high = token_ranges(int(row["data.vocab_size"]))["value"]
    return float((high - low) ** -int(row["data.value_len"]))


def with_family(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(family=[family_of(row) for _, row in frame.iterrows()])


def stages(scale: Scale) -> list:
    """The stages in order; the seeds, sizes and grid run at each family's searched learning rate."""
    return [
        Search(
            name="lr",
            knob="train.lr",
            grid=scale.lrs,
            group_key="@family",
            groups=tuple(FAMILIES),
            sweeps=lambda study, rows: [lr_sweep(scale, rows)],
            group_of=family_of,
            score=exact_match_score,
            max_extensions=scale.lr_extensions,
            rule="best final exact match, ties to the lower final eval loss",
        ),
        Stage("seeds", lambda study: [seed_sweep(scale, study.choice("lr"))], after=("lr",)),
        Stage("sizes", lambda study: [size_sweep(scale, study.choice("lr"))], after=("lr",)),
        Stage("grid", lambda study: [grid_sweep(scale, study.choice("lr"))], after=("lr",)),
    ]


def stage_runs(study: Study, stage: str) -> pd.DataFrame:
    """The completed runs of one stage, with their protocol family (curves loaded: the report reads each several
    times)."""
    return with_family(study.frame(stage, curves=True))
