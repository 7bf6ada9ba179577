"""Memory models across the objective mix (issue 19's sweep axis): the blank-copy weight from 0 (next-token loss
only: information-poor memories, by the Badger paper's account) to 2, at two chunk lengths and two widths. Chunks
of 16 and 32 bytes: longer ones are slow to autoencode on a CPU (research notes A.3: shrink the window first).

    memlab data prepare --source stdlib --out data/stdlib
    memlab sweep sweeps/memory_objective_mix.py --workdir runs/memory_mix --parallel 2
    MEMLAB_SWEEP_DIR=runs/memory_mix jupytext --to ipynb --execute analysis/memory_models.py

Every run logs `loss/next_token` and `loss/next_token@blank_copy` on their own (a weight of 0 drops the copy pass
and its cost), so causal loss and copy accuracy can be read against compute for each mix; `memlab probe-memory`
on each run measures what its memories hold.
"""

from memlab.sweep import Sweep, grid

COPY_WEIGHTS = [0.0, 0.5, 1.0, 2.0]


def memory_mix_sweep(data_path: str = "data/stdlib", name: str = "memory_objective_mix", **base) -> Sweep:
    """Every copy weight x chunk length x width; `base` overrides (dotted keys) change the budget or the model."""
    return Sweep(
        name=name,
        experiment="experiments/memory_model.py",
        base={"data.path": data_path, "logging.progress": False, **base},
        points=grid(
            {
                "objective.next_token@blank_copy": COPY_WEIGHTS,
                "data.chunk_len": [16, 32],
                "model.d_model": [64, 128],
            }
        ),
    )


def get_sweep() -> Sweep:
    return memory_mix_sweep()
