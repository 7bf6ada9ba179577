"""A memory model on stdlib text (Badger's parallel encoder-decoder, research notes A.3): 4 chunks of 64 bytes,
each chunk's decoder reads one memory vector per earlier chunk; d_model 128, 4 heads, 2 encoder + 2 decoder
attention layers with q/k/v convs. The objective is the combined one: next-token loss on every chunk plus half the
blank-copy loss (the second half of the example regenerated from the first half's memories alone), each logged on
its own (`loss/next_token`, `loss/next_token@blank_copy`).

    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/memory_model.py --set data.path=data/stdlib --workdir runs/memory/combined
    memlab train experiments/memory_model.py --set data.path=data/stdlib \\
        --set objective.next_token@blank_copy=0 --workdir runs/memory/clm            # next-token loss only

A frozen autoencoder encoder (the curriculum; train it with experiments/memory_autoencoder.py):

    memlab train experiments/memory_model.py --set data.path=data/stdlib --set train.init_from=runs/memory/ae \\
        --set train.init_map=encoder->encoder --set train.trainable=decoder/ --workdir runs/memory/frozen_ae
"""

import ml_collections

from memlab.defaults import base_config


def get_config(mode: str = "memory") -> ml_collections.ConfigDict:
    c = base_config(task="text_chunks", model="memory_model")
    c.data.path = ""  # required: a directory from `memlab data prepare` (byte tokeniser)
    c.data.num_chunks = 4
    c.data.chunk_len = 64
    c.model.mode = mode
    c.model.d_model = 128
    c.model.num_heads = 4
    c.model.encoder_layers = 2
    c.model.num_layers = 2
    c.model.qkv_conv = True
    c.objective = {"next_token": 1.0, "next_token@blank_copy": 0.5} if mode == "memory" else {"next_token": 1.0}
    c.train.steps = 1000
    c.train.batch_size = 16
    c.train.lr = 2e-3
    c.train.warmup_steps = 50
    c.train.eval_every = 100
    c.train.checkpoint_every = 200
    c.eval.num_examples = 128
    c.eval.batch_size = 64
    c.logging.group = f"memory_model_{mode}"
    return c
