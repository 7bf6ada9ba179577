"""The protocol for R. Thomas' slow-weight claims (Zenodo 19565707; research notes B.2, B.4): a BDH whose slow
block is written at inference by a few hundred gradient steps holds 20 fabricated facts at once, survives a cold
reload, keeps most of a first document when a second is written after it, keeps two documents apart, and is made
writable by meta-test-time training.

Stage `backbones` (memlab.sweep.stages) trains the two backbones on stdlib bytes (experiments/slow_weights.py),
each on the same text and budget: `meta` (next-token loss plus meta-TTT episodes of fabricated facts from the train
pool) and `plain` (next-token loss only: the episodes' weight is 0, so they cost nothing). Everything after is
evaluation on facts from the disjoint eval pool (memlab.studies.slow_weights.report), with learning rates searched on
a train-pool set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from memlab.studies.memory_models.protocol import corpus
from memlab.sweep import Sweep, grid
from memlab.sweep.search import MAX_EXTENSIONS
from memlab.sweep.stages import Stage

EXPERIMENT = Path(__file__).resolve().parents[3] / "experiments" / "slow_weights.py"
BACKBONES = {  # kind -> overrides of the experiment
    "meta": {},
    "plain": {"model.meta_inner_steps": 0, "objective.answer@episode": 0.0},
}


@dataclasses.dataclass(frozen=True)
class Scale:
    overrides: dict  # overrides of the experiment (model size, data, eval)
    steps: int
    batch: int
    seeds: tuple[int, ...]  # backbone seeds
    fact_seeds: tuple[int, ...]  # eval-pool fact sets written on every backbone
    facts: int = 20  # written jointly; the sequential documents are its two halves
    write_steps: int = 300
    write_lrs: tuple[float, ...] = (1e-2, 3e-2, 1e-1)  # Adam on the slow memories, chosen per backbone
    finetune_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)  # Adam on every weight (the interference control)
    lr_facts_seed: int = 1000  # the train-pool facts the learning rates are chosen on
    eval_every: int = 250
    lr_extensions: int = MAX_EXTENSIONS  # how far a learning-rate search may go past its grid


SCALES = {
    "cpu": Scale(overrides={}, steps=1000, batch=8, seeds=(0,), fact_seeds=(0, 1, 2)),
    "paper": Scale(  # the anchor's BDH size, on the same text; hours on one GPU
        overrides={"model.d_model": 256, "model.num_heads": 4, "model.neuron_multiplier": 128, "model.num_layers": 6},
        steps=20_000,
        batch=32,
        seeds=(0, 1, 2),
        fact_seeds=(0, 1, 2),
        eval_every=1000,
    ),
}


def backbone_sweep(scale: Scale, text: Path) -> Sweep:
    return Sweep(
        name="backbones",
        experiment=str(EXPERIMENT),
        base={
            **scale.overrides,
            "data.path": str(text),
            "train.steps": scale.steps,
            "train.batch_size": scale.batch,
            "train.eval_every": scale.eval_every,
            "train.checkpoint_every": scale.eval_every,
            "logging.wandb_mode": "offline",
            "logging.progress": False,
        },
        points=[
            {**point, **BACKBONES[point["@backbone"]]}
            for point in grid({"@backbone": list(BACKBONES), "train.seed": list(scale.seeds)})
        ],
    )


def stages(scale: Scale) -> list:
    return [Stage("backbones", lambda study: [backbone_sweep(scale, corpus(study.runs))])]


def backbone_dirs(runs: Path) -> dict[tuple[str, int], Path]:
    """{(kind, seed): run directory} of the finished backbones."""
    from memlab.analysis.runs import load_runs

    frame = load_runs(runs / "backbones")
    out = {}
    for _, row in frame.iterrows():
        kind = "plain" if row["model.meta_inner_steps"] == 0 else "meta"
        out[(kind, int(row["train.seed"]))] = Path(row["run_dir"])
    return out
