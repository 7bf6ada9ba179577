"""Does a retention objective help recall? MQAR's answer loss mixed with a copy objective at three weights:

    memlab sweep sweeps/objective_mix.py --workdir runs/objective_mix --report

The copy pass (memlab.passes) runs the same LM on a view of each example that repeats its first half and scores
the repeat: the retention objective of memory models, here for a causal LM. Weight 0 is the baseline: its runs
skip the copy pass (no cost, the same gradients as without the key), so the three points differ only in the mix.
Both widths of mqar_mixers' plain attention LM, on the same batches.
"""

from memlab.sweep import Sweep, grid

BASE = {
    "model.qkv_conv": False,  # plain attention: copying in context needs the induction circuit the copy pass trains
    "data.vocab_size": 64,
    "data.seq_len": 64,
    "data.num_kv_pairs": 8,
    "train.steps": 400,
    "train.batch_size": 32,
    "train.warmup_steps": 30,
    "train.eval_every": 50,
    "train.checkpoint_every": 200,
    "eval.num_examples": 256,
    "logging.progress": False,
}


def objective_mix_sweep(d_models=(32, 64), name: str = "objective_mix", **base) -> Sweep:
    """Every copy weight at every width; `base` overrides (dotted keys) change the task or the budget."""
    return Sweep(
        name=name,
        experiment="experiments/mqar.py",
        base={**BASE, **base},
        points=grid({"objective.next_token@copy": [0.0, 0.25, 1.0], "model.d_model": list(d_models)}),
    )


def get_sweep() -> Sweep:
    return objective_mix_sweep()
