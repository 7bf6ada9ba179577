"""Context QA with the decoder-only LM baseline over [context; question; answer] (5 attention layers with q/k/v
convs, the slot model's parameter count): experiments/context_qa.py's task and training with `model.name = "lm"`
at its `DEPTH`.

    memlab train experiments/context_qa_lm.py --workdir runs/cqa/lm
"""

from pathlib import Path

import ml_collections

from memlab.config import load_module

context_qa = load_module(Path(__file__).with_name("context_qa.py"))


def get_config() -> ml_collections.ConfigDict:
    return context_qa.get_config("lm")
