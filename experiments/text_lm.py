"""A small LM on prepared text: next-token loss, validation loss per token and eval/bits_per_byte.

    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/text_lm.py --set data.path=data/stdlib --workdir runs/text_lm

Any mixer stack works (`--set model.mixers=attn,attn`); documents are packed with segment ids, so attention
and recurrent mixers reset at document boundaries. The defaults train in a few minutes on a laptop CPU.
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="text", model="lm")
    c.data.path = ""  # required: a directory from `memlab data prepare`
    c.data.seq_len = 128
    c.data.packing = "segments"
    c.model.mixers = "attn"
    c.model.d_model = 128
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.objective = {"next_token": 1.0}
    c.train.steps = 300
    c.train.batch_size = 16
    c.train.lr = 3e-3
    c.train.warmup_steps = 30
    c.train.eval_every = 50
    c.train.checkpoint_every = 100
    c.eval.num_examples = 128
    c.eval.batch_size = 64
    c.logging.group = "text_lm"
    return c
