"""MQAR recall against decoding-state size: softmax attention and Gated DeltaNet at four widths.

    memlab sweep sweeps/mqar_recall.py --workdir runs/mqar_recall --parallel 2 --report

Attention's state (the KV cache) grows with the sequence; Gated DeltaNet's (an H x K x V matrix per layer) does
not. The report plots recall accuracy against `state_size` and against width; accuracy is plotted, not fitted
with a loss law (recall jumps once a model can hold the pairs: a phase transition, not a power law). 1000 steps
so that every family has left chance (at 300 steps Gated DeltaNet had not started learning).
"""

from memlab.sweep import Sweep, grid


def get_sweep():
    return Sweep(
        name="mqar_recall",
        experiment="experiments/mqar.py",
        base={
            "data.vocab_size": 64,
            "data.seq_len": 64,
            "data.num_kv_pairs": 8,
            "train.steps": 1000,
            "train.batch_size": 32,
            "train.warmup_steps": 50,
            "train.eval_every": 100,
            "train.checkpoint_every": 500,
            "eval.num_examples": 256,
            "logging.progress": False,
        },
        points=grid({"model.mixers": ["attn", "gdn"], "model.d_model": [16, 32, 48, 64]}),
    )
