"""A BDH with a slow block, meta-test-time trained to be writable (memlab.models.bdh, memlab.models.slow_block):

    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/slow_weights.py --set data.path=data/stdlib --workdir runs/slow_weights

Each step trains the next-token loss on a 128-byte window of text and one episode per example (the
`fact_episodes` task, the `episode` pass): F fabricated facts are written into the slow memory by
`model.meta_inner_steps` SGD steps on their lines, from its learned initial value, and the facts' prompts are
then answered with the written memory and without the facts in context (`answer@episode`). The plain backbone
control is the same run with `--set model.meta_inner_steps=0 --set "objective={'next_token': 1.0}"`.

Write facts into a trained run's slow block, save it and query it in a fresh process with `memlab write` and
`memlab query` (memlab.slow_weights).
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="fact_episodes", model="bdh")
    c.data.path = ""  # required: a byte-tokenised directory from `memlab data prepare`
    c.data.seq_len = 128
    c.data.packing = "segments"
    c.data.facts_per_doc = 8
    c.data.doc_len = 32
    c.data.probe_len = 32
    c.model.slow_layers = "2"  # after the third of four layer passes: two passes left to turn a read into bytes
    c.model.meta_inner_steps = 2
    c.model.meta_inner_lr = 100.0  # inner gradients on M are ~1e-3: a step of ~0.1 per entry to start from
    c.objective = {"next_token": 1.0, "answer@episode": 1.0}
    c.train.steps = 1500
    c.train.batch_size = 8
    c.train.lr = 3e-3
    c.train.weight_decay = 0.1
    c.train.warmup_steps = 100
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.eval.num_examples = 64
    c.eval.batch_size = 32
    c.logging.group = "slow_weights"
    return c
