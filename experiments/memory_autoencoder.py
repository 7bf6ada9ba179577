"""The unrolled transformer autoencoder of the memory-model study (research notes A.1, A.3): every 64-byte chunk
is encoded to one vector and regenerated from it alone; experiments/memory_model.py's sizes with
`model.mode = "autoencoder"` and the reconstruction loss (`next_token` on the targets the model returns). Its
encoder (`encoder/`, embedding included) is the frozen high-fidelity encoder of the curriculum.

    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/memory_autoencoder.py --set data.path=data/stdlib --workdir runs/memory/ae
"""

from pathlib import Path

import ml_collections

from memlab.config import load_module

memory_model = load_module(Path(__file__).with_name("memory_model.py"))


def get_config() -> ml_collections.ConfigDict:
    return memory_model.get_config("autoencoder")
