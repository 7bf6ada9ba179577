"""memlab's main job on a laptop CPU: two model families at four sizes on MQAR, then a report with fitted laws.

    memlab sweep sweeps/quickstart.py --workdir runs/quickstart --parallel 2 --report

Families: softmax attention (a KV cache that grows with the sequence) and Gated DeltaNet (a fixed matrix memory
per head), the contrast memlab is built to measure. Sizes d_model in {16, 32, 48, 64}: enough points per family
for a loss-vs-compute law, plotted also against decoding state size.
"""

from memlab.sweep import Sweep, grid


def get_sweep():
    return Sweep(
        name="quickstart",
        experiment="experiments/mqar.py",
        base={
            "data.vocab_size": 64,
            "data.seq_len": 64,
            "data.num_kv_pairs": 8,
            "train.steps": 300,
            "train.batch_size": 32,
            "train.warmup_steps": 30,
            "train.eval_every": 50,
            "train.checkpoint_every": 200,
            "eval.num_examples": 256,
            "logging.progress": False,
        },
        points=grid({"model.mixers": ["attn", "gdn"], "model.d_model": [16, 32, 48, 64]}),
    )
