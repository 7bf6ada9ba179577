"""MQAR with a 2-layer softmax-attention LM: the baseline recall experiment (Zoology-style).

    memlab train experiments/mqar.py --workdir runs/mqar
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="mqar", model="lm")
    c.data.vocab_size = 256
    c.data.seq_len = 128
    c.data.num_kv_pairs = 16
    c.model.mixers = "attn"
    c.model.d_model = 64
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.objective = {"answer": 1.0}
    c.train.steps = 1000
    c.train.batch_size = 64
    c.train.lr = 3e-3
    c.logging.group = "mqar"
    return c
