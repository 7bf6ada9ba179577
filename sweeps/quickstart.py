"""memlab's main job on a laptop CPU: a language-modelling scaling study, then a report with fitted laws.

    memlab data prepare --source stdlib --out data/stdlib      # scripts/quickstart.sh does this once, then reuses it
    memlab sweep sweeps/quickstart.py --workdir runs/quickstart --parallel 2 --report

Two families on the built-in corpus (Python's standard library, byte-level): softmax attention (a KV cache that
grows with the sequence) and Gated DeltaNet (a fixed matrix memory per head). Five widths per family, each with
a token budget that grows with its size (D ~ d, so N ~ d^2 and D ~ N^0.5: bigger models also see more data), so
the runs spread over a decade and a half of training compute. The report plots validation bits per byte against
compute with a fitted frontier per family and says which family needs less compute for the same loss.
MQAR recall against decoding-state size is its own sweep: sweeps/mqar_recall.py.
"""

from pathlib import Path

from memlab.sweep import Sweep, grid, product

DATA = Path(__file__).resolve().parents[1] / "data" / "stdlib"
WIDTHS = [32, 48, 64, 96, 128]
TOKENS_PER_WIDTH = 12_500  # training tokens per unit of d_model: 0.4M at d=32 .. 1.6M at d=128


def get_sweep():
    return Sweep(
        name="quickstart",
        experiment="experiments/text_lm.py",
        base={
            "data.path": str(DATA),
            "model.num_layers": 2,
            "model.num_heads": 2,
            "train.batch_size": 16,
            "train.lr": 3e-3,
            "train.warmup_steps": 30,
            "train.checkpoint_every": 1000,
            "eval.num_examples": 128,
            "logging.progress": False,
        },
        points=product(
            grid({"model.mixers": ["attn", "gdn"]}),
            [{"model.d_model": d, "@tokens": d * TOKENS_PER_WIDTH, "@evals": 8} for d in WIDTHS],
        ),
    )
