"""Context QA with the full encoder-decoder baseline (3 encoder + 2 decoder layers, the slot model's parameter
count): experiments/context_qa.py's task and training with `model.name = "encdec"` at its `DEPTH`.

    memlab train experiments/context_qa_encdec.py --workdir runs/cqa/encdec
"""

from pathlib import Path

import ml_collections

from memlab.config import load_module

context_qa = load_module(Path(__file__).with_name("context_qa.py"))


def get_config() -> ml_collections.ConfigDict:
    return context_qa.get_config("encdec")
