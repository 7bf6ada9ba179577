"""BDH (the Dragon Hatchling; memlab.models.bdh) as a byte-level LM on prepared text, CPU-sized:

    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/bdh.py --set data.path=data/stdlib --workdir runs/bdh

d 64, 2 heads, 512 neurons per head, 4 layer passes of one shared set of weights, 128-byte windows: ~0.2M
non-embedding parameters. The anchor's size is `--set model.d_model=256 --set model.num_heads=4
--set model.neuron_multiplier=128 --set model.num_layers=6 --set data.seq_len=512` (25.3M parameters; AdamW lr
1e-3, weight decay 0.1, batch 32, 3000 steps on tiny Shakespeare in pathwaycom/bdh).
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="text", model="bdh")
    c.data.path = ""  # required: a directory from `memlab data prepare` (byte tokeniser)
    c.data.seq_len = 128
    c.data.packing = "segments"
    c.objective = {"next_token": 1.0}
    c.train.steps = 1500
    c.train.batch_size = 16
    c.train.lr = 3e-3
    c.train.weight_decay = 0.1
    c.train.warmup_steps = 100
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.eval.num_examples = 128
    c.eval.batch_size = 64
    c.logging.group = "bdh"
    return c
