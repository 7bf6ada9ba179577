"""Beyond-window recall: facts in earlier windows, the question in the last; attention sees one block window.

    memlab train experiments/window_recall.py --workdir runs/window_recall
    memlab train experiments/window_recall.py --set data.fact_distance=0 --workdir runs/window_recall_in
    memlab data prepare --source stdlib --out data/stdlib
    memlab train experiments/window_recall.py --set data.fact_distance=0 --set data.filler=text \
        --set data.text_path=data/stdlib --set data.text_fraction=0.5 --set objective.next_token=1.0 \
        --workdir runs/window_recall_backbone

The first asks about facts 1-3 windows back (`data.fact_distance=-1`): attention limited to its own block of
`data.window` tokens cannot see them, so this LM stays near chance (1 / data.num_values) unless a state spans the
episode. The second keeps the facts in the last window (the in-window control). The third trains a backbone for
δ-mem adapters: stdlib text filler, half the examples plain text, next-token plus answer loss.
Change `model.attention_window` with `data.window` (0 attends over the whole episode: the oracle).
"""

from memlab.defaults import base_config


def get_config():
    c = base_config(task="window_recall", model="lm")
    c.data.num_windows = 4
    c.data.window = 64
    c.data.num_facts = 4
    c.model.mixers = "attn"
    c.model.qkv_conv = True
    c.model.d_model = 128
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.attention_window = 64  # = data.window: attention sees its own block window only
    c.model.attention_window_kind = "block"
    c.objective = {"answer": 1.0}
    c.train.steps = 1000
    c.train.batch_size = 32
    c.train.warmup_steps = 50
    c.train.lr = 3e-3
    c.train.eval_every = 100
    c.eval.num_examples = 256
    c.eval.batch_size = 64
    c.logging.group = "window_recall"
    return c
