"""Slot-memory efficiency on context QA: k in {4, 8, 16, 32, 64} x L/k in {4, 8, 16, 32} (L = ratio * k), and
the two baselines (full encoder-decoder, decoder-only LM over [context; question; answer]) at every L the grid
reaches, all at matched parameter counts (the depths of experiments/context_qa.py's DEPTH), then the efficiency
report:

    memlab sweep sweeps/slot_efficiency.py --workdir runs/slot_efficiency
    memlab efficiency runs/slot_efficiency --target 0.9

Small scale (d_model 64, 1000 steps of 32 examples; BENCHMARKS.md has the slot model's curve at L=512, k=32) so
points run on a laptop CPU; the largest L (2048) are the slowest, so `--parallel` or a subset (edit K / RATIOS)
is the way to a first look.
"""

from pathlib import Path

from memlab.config import load_module
from memlab.sweep import Sweep, chain, grid

context_qa = load_module(Path(__file__).resolve().parents[1] / "experiments" / "context_qa.py")

K = [4, 8, 16, 32, 64]
RATIOS = [4, 8, 16, 32]
LENGTHS = sorted({k * r for k in K for r in RATIOS})


def derive(point: dict) -> dict:
    """L from the point (ratio * k for slots), slots from k, facts that fit L, layers that match parameters."""
    length = point["@L"] if "@L" in point else point["@ratio"] * point["@k"]
    out = {
        "data.context_len": length,
        "data.num_facts": min(8, length // 4),
        "data.questions_per_context": min(8, length // 4),  # questions are distinct facts of the context
        "model.num_layers": context_qa.DEPTH[point["model.name"]],
    }
    if point["model.name"] == "slot_memory":
        out["model.num_slots"] = point["@k"]
    return out


def get_sweep():
    return Sweep(
        name="slot_efficiency",
        experiment="experiments/context_qa.py",
        base={
            "train.steps": 1000,
            "train.eval_every": 50,
            "train.checkpoint_every": 500,
            "train.warmup_steps": 100,
            "eval.num_examples": 256,
            "logging.wandb_mode": "offline",
        },
        points=chain(
            grid({"model.name": ["slot_memory"], "@k": K, "@ratio": RATIOS}),
            grid({"model.name": ["encdec", "lm"], "@L": LENGTHS}),
        ),
        derive=derive,
    )
