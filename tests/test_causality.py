"""Causality of every model family with one helper (`helpers.assert_causal`): a token never changes an output
before it, through the training forward and, where a family decodes token by token, through its decoding path.
The encoder-decoder families are causal in the answer they decode (the context and question are read whole)."""

import jax
import pytest

from memlab.config import load_config
from memlab.data.tasks.context_qa import ContextQA
from memlab.models import build_model
from memlab.registry import MIXERS
from tests.helpers import ROOT, assert_causal, decoded_logits, logits_of

LM_CASES = [
    ("model.mixers=attn",),
    ("model.mixers=attn", "model.qkv_conv=True", "model.copy_init=True"),
    ("model.mixers=attn", "model.attention_window=4"),
    ("model.mixers=attn,gdn", "model.attention_window=4", "model.attention_window_kind=block"),
    ("model.mixers=conv,gdn",),
    ("model.mixers=hebbian",),
    ("model.mixers=hebbian", "model.hebbian_decay=True"),
    ("model.mixers=deltanet",),
    ("model.mixers=gdn",),
    ("model.mixers=gdn", "model.matrix_read=before"),
    ("model.mixers=hebbian", "model.matrix_read=before"),
    ("model.mixers=gdn,attn", "model.matrix_expand_v=2"),
    ("model.mixers=mlstm",),
    ("model.mixers=ttt_linear",),
    ("model.mixers=ttt_linear", "model.ttt_variant=minibatch", "model.ttt_minibatch=4"),
    ("model.mixers=titans",),
    ("model.mixers=titans", "model.titans_momentum=True", "model.titans_depth=2"),
]


def test_every_registered_mixer_is_checked():
    checked = {m for case in LM_CASES for m in case[0].split("=")[1].split(",")}
    assert checked == set(MIXERS.names())


@pytest.mark.parametrize("overrides", LM_CASES, ids=lambda o: "-".join(s.split("=")[1] for s in o))
def test_lm_is_causal_in_training_and_decoding(tiny_config, overrides):
    cfg = tiny_config("data.seq_len=16", "model.matrix_chunk_size=8", *overrides)  # two chunks: crosses a boundary
    model = build_model(cfg.model, seed=0)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.model.vocab_size)
    assert_causal(lambda t: logits_of(model, {"inputs": t}), tokens, cfg.model.vocab_size, positions=(0, 9, 15))
    assert_causal(lambda t: decoded_logits(model, t), tokens, cfg.model.vocab_size, positions=(0, 9), atol=1e-5)


@pytest.mark.parametrize(
    "family, overrides",
    [("slot_memory", ()), ("encdec", ()), ("encdec", ("model.encoder_layers=0", "model.num_layers=4"))],
    ids=["slot_memory", "encdec", "encdec-noenc"],
)
def test_encoder_decoders_are_causal_in_the_answer(family, overrides):
    cfg = load_config(
        ROOT / "experiments" / "context_qa.py",
        [
            f"model.name='{family}'",
            "data.context_len=48",
            "data.num_facts=4",
            "data.questions_per_context=3",
            "data.compose_fraction=0.5",  # 4 answer tokens
            "data.vocab_size=64",
            "model.d_model=32",
            "model.num_slots=6",
            "logging.wandb_mode='disabled'",
            *overrides,
        ],
    )
    model = build_model(cfg.model, seed=0)
    task = ContextQA(cfg.data, "train", 0)
    batch = {k: jax.numpy.stack([task[i][k] for i in range(2)]) for k in task[0]}
    flat = lambda t: t.reshape(2 * 3, -1)  # answers of every question as rows, answer position second

    def outputs_of(answer_inputs):
        logits = logits_of(model, dict(batch, answer_inputs=answer_inputs.reshape(2, 3, -1)))
        return logits.reshape(2 * 3, logits.shape[2], -1)

    assert_causal(outputs_of, flat(batch["answer_inputs"]), cfg.data.vocab_size, positions=(1, 2, 3))
