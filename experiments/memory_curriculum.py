"""A memory model on a frozen autoencoder encoder, with Badger's curriculum (research notes A.1): the decoder first
learns to read memories (blank copy only) for `train.curriculum_steps` steps, then also to predict next tokens (the
combined objective of experiments/memory_model.py). The encoder, its own embedding included, comes from an
autoencoder run (experiments/memory_autoencoder.py, same sizes) and never trains.

    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/memory_autoencoder.py --set data.path=data/stdlib --workdir runs/memory/ae
    memlab train experiments/memory_curriculum.py --set data.path=data/stdlib --set train.init_from=runs/memory/ae \\
        --workdir runs/memory/curriculum

Evaluation scores the combined objective throughout, so `eval/accuracy/next_token@blank_copy` (copy Hamming) and
`eval/later_chunks_loss` read the same across the switch and against a memory model trained from scratch.
"""

from pathlib import Path

import ml_collections

from memlab.config import load_module

memory_model = load_module(Path(__file__).with_name("memory_model.py"))


def get_config() -> ml_collections.ConfigDict:
    c = memory_model.get_config("memory")
    c.train.init_from = ""  # required: the autoencoder run whose encoder is frozen
    c.train.init_map = ("encoder->encoder",)
    c.train.trainable = ("decoder/",)
    c.train.curriculum_steps = c.train.steps // 2
    c.train.curriculum_objective = {"next_token@blank_copy": 1.0}
    c.logging.group = "memory_model_curriculum"
    return c
