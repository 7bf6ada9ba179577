"""What freezing saves: training FLOPs per token, analytic and XLA, when only part of an LM trains, and when a
second pass joins the objective mix. ``python -m benchmarks.partial_flops [--d-model 128 --layers 4 --seq 256]``
from the repository root; prints a markdown table (the rows of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from memlab.config import load_config
from memlab.data.pipeline import example_shapes
from memlab.models import build_model
from memlab.train.flops import analytic_flops_per_token, xla_flops_per_token
from memlab.train.partial import trainable_names
from memlab.train.step import make_grad_fn

CASES = [  # (what trains, train.trainable, objective mix)
    ("everything", (), {"answer": 1.0}),
    ("the last block and the head", ("blocks/{last}/", "final_norm", "unembed"), {"answer": 1.0}),
    ("the head only", ("final_norm", "unembed"), {"answer": 1.0}),
    ("the embedding only", ("embed",), {"answer": 1.0}),
    ("the q and o projections (LoRA-like)", (".*mixer/q/", ".*mixer/o/"), {"answer": 1.0}),
    ("everything, + copy pass at weight 0", (), {"answer": 1.0, "next_token@copy": 0.0}),
    ("everything, + copy pass at weight 0.5", (), {"answer": 1.0, "next_token@copy": 0.5}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    args = parser.parse_args()
    cfg = load_config(
        "experiments/mqar.py",
        [
            f"model.d_model={args.d_model}",
            f"model.num_layers={args.layers}",
            f"data.seq_len={args.seq}",
            "model.qkv_conv=False",
            "logging.wandb_mode=disabled",
        ],
    )
    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    shapes = example_shapes(cfg)
    batch = {k: jnp.zeros((2, *s), jnp.float32 if k == "loss_mask" else jnp.int32) for k, s in shapes.items()}
    tokens = shapes["inputs"][0]
    device = jax.devices()[0].device_kind
    print(f"LM d_model={args.d_model}, {args.layers} attn layers, seq {args.seq}, MQAR batch; {device}")
    print("| what trains | analytic FLOPs/token | XLA FLOPs/token | analytic / all | XLA / all |")
    print("|---|---|---|---|---|")
    base = None
    for what, patterns, weights in CASES:
        names = trainable_names(params, [p.format(last=args.layers - 1) for p in patterns])
        analytic = analytic_flops_per_token(model, shapes, tokens, names, weights)
        xla = xla_flops_per_token(make_grad_fn(graphdef, weights, names), params, batch, tokens)
        base = base or (analytic, xla)
        print(f"| {what} | {analytic:.3e} | {xla:.3e} | {analytic / base[0]:.3f} | {xla / base[1]:.3f} |")


if __name__ == "__main__":
    main()
