"""Does a retention objective help recall? MQAR's answer loss mixed with a copy objective at three weights:

    memlab sweep sweeps/objective_mix.py --workdir runs/objective_mix --report

The copy pass (memlab.passes) runs the same LM on a view of each example that repeats its first half and scores
the repeat: the retention objective of memory models, here for a causal LM. Weight 0 is the baseline: its runs
skip the copy pass (no cost, the same gradients as without the key), so the three points differ only in the mix.
Both widths of mqar_mixers' plain attention LM, on the same batches.
"""

from pathlib import Path

from memlab.config import load_module
from memlab.sweep import Sweep, grid

# mqar_mixers' task and budget, with plain attention: copying in context needs the induction circuit the copy pass
# trains
BASE = {**load_module(Path(__file__).with_name("mqar_mixers.py"), "sweep").BASE, "model.qkv_conv": False}


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
