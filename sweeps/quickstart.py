"""memlab's main job on a laptop CPU: softmax attention at three sizes on MQAR, then a report.

    memlab sweep sweeps/quickstart.py --workdir runs/quickstart --parallel 2 --report
"""

from memlab.sweep import Sweep, grid


def get_sweep():
    return Sweep(
        name="quickstart",
        experiment="experiments/mqar.py",
        base={"train.steps": 300, "train.eval_every": 50, "train.checkpoint_every": 100,
              "data.num_kv_pairs": 8, "logging.wandb_mode": "offline"},
        points=grid({"model.mixers": ["attn"], "model.d_model": [32, 64, 128]}),
    )
