"""MQAR with a 2-layer LM (Zoology-style): sequence 128, 8 key-value pairs, 64-token vocabulary.

    memlab train experiments/mqar.py --workdir runs/mqar                          # softmax attention
    memlab train experiments/mqar.py --set model.mixers=gdn --workdir runs/mqar_gdn  # Gated DeltaNet

On a 2-core CPU (BENCHMARKS.md): gdn passes 0.9 answer accuracy after ~400 steps (about 2 minutes) and
reaches 0.99 by 1200 (7 minutes); softmax attention learns the same task far more slowly (0.15 after 1200
steps, 5.5 minutes).
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="mqar", model="lm")
    c.data.vocab_size = 64
    c.data.seq_len = 128
    c.data.num_kv_pairs = 8
    c.model.mixers = "attn"
    c.model.d_model = 64
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.objective = {"answer": 1.0}
    c.train.steps = 1200
    c.train.batch_size = 32
    c.train.warmup_steps = 50
    c.train.lr = 3e-3
    c.logging.group = "mqar"
    return c
