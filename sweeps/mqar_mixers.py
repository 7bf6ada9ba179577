"""Zoology-style recall comparison of the sequence mixers on MQAR, small enough for a laptop CPU:

    memlab sweep sweeps/mqar_mixers.py --workdir runs/mqar_mixers --report

Every mixer in the same 2-layer LM (softmax attention with q/k/v convs, Hebbian linear attention, mLSTM, DeltaNet,
Gated DeltaNet, TTT-Linear and Titans at their anchors' defaults) at d_model in {32, 64} (minutes
on 2 CPU cores), on the same batches. The report plots answer accuracy against d_model and against `state_size`
(numbers a sequence carries when decoding: the KV cache for attention, the H x K x V memory for the matrix mixers),
the two axes of Zoology's figure. Parameter counts are matched at each d_model: the mLSTM block runs with
up-projection factor 1 (xLSTM's 2 would give it ~40% more parameters than the others); the remaining spread is
under 10% (the report's table lists every count).

`mqar_sweep` is the one definition of the comparison: `memlab reproduce mqar-mixers` (memlab/reproduce/claims/
mqar_mixers.py) calls it with wider models and a harder task at paper scale.
"""

from memlab.sweep import Sweep, chain, grid

# mlstm joins them below, with its own projection factor
MIXERS = ["attn", "hebbian", "deltanet", "gdn", "ttt_linear", "titans"]
D_MODELS = [32, 64]  # add 128, 256 on a GPU
BASE = {
    "model.qkv_conv": True,  # attention as the experiment runs it today (the convs learn MQAR far sooner)
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


def mqar_sweep(d_models=tuple(D_MODELS), name: str = "mqar_mixers", **base) -> Sweep:
    """Every mixer at every d_model; `base` overrides (dotted keys) change the task or the training budget."""
    d_models = list(d_models)
    return Sweep(
        name=name,
        experiment="experiments/mqar.py",
        base={**BASE, **base},
        points=chain(
            grid({"model.mixers": MIXERS, "model.d_model": d_models}),
            grid({"model.mixers": ["mlstm"], "model.d_model": d_models, "model.mlstm_proj_factor": [1.0]}),
        ),
    )


def get_sweep():
    return mqar_sweep()
