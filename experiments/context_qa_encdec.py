"""Context QA with the full encoder-decoder baseline (3 encoder + 2 decoder layers, the slot model's parameter
count): experiments/context_qa.py's task and training with `model.name = "encdec"` at its `DEPTH`.

    memlab train experiments/context_qa_encdec.py --workdir runs/cqa/encdec
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location("context_qa", Path(__file__).with_name("context_qa.py"))
context_qa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(context_qa)


def get_config() -> ml_collections.ConfigDict:
    return context_qa.get_config("encdec")
