"""MQAR with a 2-layer LM (Zoology-style): sequence 128, 8 key-value pairs, 64-token vocabulary.

    memlab train experiments/mqar.py --workdir runs/mqar                                # attention + qkv convs
    memlab train experiments/mqar.py --set model.qkv_conv=False --workdir runs/mqar_plain  # plain attention
    memlab train experiments/mqar.py --set model.mixers=gdn --workdir runs/mqar_gdn       # Gated DeltaNet

Softmax attention with short convolutions on its queries, keys and values (`model.qkv_conv`) is the default: it
learns the task far sooner than plain attention, which has to grow an induction circuit across both layers
(BENCHMARKS.md has the curves of all three commands).
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="mqar", model="lm")
    c.data.vocab_size = 64
    c.data.seq_len = 128
    c.data.num_kv_pairs = 8
    c.model.mixers = "attn"
    c.model.qkv_conv = True
    c.model.d_model = 64
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.objective = {"answer": 1.0}
    c.train.steps = 600
    c.train.batch_size = 32
    c.train.warmup_steps = 50
    c.train.lr = 3e-3
    c.logging.group = "mqar"
    return c
