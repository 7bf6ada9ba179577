"""Context QA (512-token contexts, 8 facts, 8 single-fact questions per context): the task and training setup the
three families share, and the slot memory (k = 32 slots, L/k = 16). Each baseline has its own file that takes
this setup at its matched depth:

    memlab train experiments/context_qa.py --workdir runs/cqa/slot
    memlab train experiments/context_qa_encdec.py --workdir runs/cqa/encdec
    memlab train experiments/context_qa_lm.py --workdir runs/cqa/lm

`get_config(family)` gives any family. The model group holds the knobs of all three families, so one sweep over
this file can vary `model.name` (setting `model.num_layers` from `DEPTH`, as the slot-efficiency protocol does);
each family reads its own: slot_memory (num_slots, slot_layers, question_layers, num_layers = decoder layers),
encdec (encoder_layers, num_layers = decoder layers), lm (mixers, num_layers). `DEPTH` gives the layer counts
that match parameter counts at equal d_model (SwiGLU at ratio 4: a layer is ~20 d^2 with cross-attention,
~16 d^2 without): slot 2 + 1 + 1 layers = 80 d^2, lm 5 layers = 80 d^2, encdec 3 + 2 layers = 88 d^2.
"""

import ml_collections

from memlab.defaults import base_config
from memlab.models import MODELS

DEPTH = {"slot_memory": 1, "encdec": 2, "lm": 5}  # model.num_layers per family at matched parameters


def get_config(family: str = "slot_memory") -> ml_collections.ConfigDict:
    """The context-QA run of `family` at its matched depth, with every family's knobs in the model group."""
    c = base_config(task="context_qa", model=family)
    for name in DEPTH:
        for key, value in MODELS.get(name).defaults().items():
            if key not in c.model:
                c.model[key] = value
    c.model.num_layers = DEPTH[family]
    c.data.vocab_size = 128
    c.data.context_len = 512
    c.data.num_facts = 8
    c.data.key_len = 1
    c.data.value_len = 2
    c.data.questions_per_context = 8  # each context is encoded once and asked 8 questions
    c.model.d_model = 64
    c.model.num_heads = 2
    c.model.num_slots = 32
    # Output head tied to the embedding: with copy_init (attention that starts copying) a value token read from
    # the context raises its own logit from the first step, the signal that teaches the slots what to read
    # among random distractors. Untied (or without copy_init) the slot model stayed near chance (BENCHMARKS.md).
    c.model.tie_embeddings = True
    c.model.copy_init = True  # every family's attention starts as a copying lookup (the LM's too: same tricks)
    c.model.qkv_conv = True  # the LM baseline's attention with the q/k/v convs that solve MQAR (lm reads it only)
    c.objective = {"answer": 1.0}
    c.train.steps = 1500
    c.train.batch_size = 32
    c.train.lr = 3e-3
    c.train.warmup_steps = 100
    c.train.eval_every = 100
    c.train.checkpoint_every = 500
    c.eval.num_examples = 256
    c.eval.batch_size = 128
    c.logging.group = "context_qa"
    return c
