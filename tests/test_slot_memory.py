"""Slot memory and its baselines on context QA: all questions answered from one encoding (keys and values shared)
equal each answered alone, the decoder reading the context, analytic FLOPs against XLA, and all three families
training through `memlab train`. Matched parameters and K/V once per context in XLA's count:
tests/test_slot_protocol.py; causality: tests/test_causality.py."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.config import load_config
from memlab.data.pipeline import example_shapes, tokens_per_example
from memlab.data.tasks.context_qa import ContextQA
from memlab.errors import ConfigError
from memlab.models import build_model, count_params
from memlab.train.flops import analytic_flops_per_token, xla_flops_per_token
from memlab.train.step import make_loss_fn
from tests.helpers import ROOT, logits_of

EXPERIMENTS = {
    "slot_memory": ROOT / "experiments" / "context_qa.py",  # each family at its matched depth
    "encdec": ROOT / "experiments" / "context_qa_encdec.py",
    "lm": ROOT / "experiments" / "context_qa_lm.py",
}
TINY = [
    "data.context_len=48",
    "data.num_facts=4",
    "data.questions_per_context=3",
    "data.compose_fraction=0.5",
    "data.vocab_size=64",
    "model.d_model=32",
    "model.num_slots=6",
    "logging.wandb_mode=disabled",
    "logging.progress=False",
]


def config(family, *overrides):
    return load_config(EXPERIMENTS[family], [*TINY, *overrides])


def batch_of(cfg, n=4, split="train"):
    task = ContextQA(cfg.data, split, 0)
    examples = [task[i] for i in range(n)]
    return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["slot_memory", "encdec"])
def test_all_questions_at_once_equal_each_answered_from_one_encoding(family):
    """The batched call (every question of a context against one encoding, as training runs it) gives what
    answering the questions one at a time from a single cached encoding gives."""
    cfg = config(family)
    model, batch = build_model(cfg.model, seed=0), batch_of(cfg)
    encode, answer = nnx.jit(lambda m, c: m.encode_context(c)), nnx.jit(lambda m, *a: m.answer(*a))
    cached = encode(model, batch["context"])
    batched = logits_of(model, batch)
    for j in range(batch["question"].shape[1]):
        from_cache = answer(model, cached, batch["question"][:, j], batch["answer_inputs"][:, j])
        together = batched[:, j]
        np.testing.assert_allclose(np.asarray(together), np.asarray(from_cache), atol=1e-5)
        np.testing.assert_array_equal(np.argmax(together, -1), np.argmax(from_cache, -1))


@pytest.mark.parametrize("family", ["slot_memory", "encdec"])
def test_decoder_reads_the_context(family):
    """(Its causality in the answer: tests/test_causality.py.)"""
    cfg = config(family)
    model, batch = build_model(cfg.model, seed=0), batch_of(cfg)
    base = logits_of(model, batch)
    other = dict(batch, context=batch["context"].at[:, :].set(batch["context"][::-1]))
    assert not np.allclose(np.asarray(logits_of(model, other)), np.asarray(base))


@pytest.mark.parametrize(
    "family, overrides",
    [("slot_memory", ()), ("encdec", ()), ("encdec", ("model.encoder_layers=0",)), ("lm", ())],
    ids=["slot_memory", "encdec", "encdec-no-encoder", "lm"],
)
@pytest.mark.slow
def test_analytic_flops_match_xla_within_10_percent(family, overrides):
    cfg = config(family, *overrides)
    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    shapes, per_example = example_shapes(cfg), tokens_per_example(cfg)
    grad_fn = jax.value_and_grad(make_loss_fn(graphdef, dict(cfg.objective)), has_aux=True)
    analytic = analytic_flops_per_token(model, shapes, per_example)
    xla = xla_flops_per_token(grad_fn, params, batch_of(cfg, n=2), per_example)
    assert abs(analytic / xla - 1) < 0.10, (analytic, xla)


@pytest.mark.parametrize("copy_init", [True, False])
def test_copy_init_starts_attention_as_a_copying_lookup(copy_init):
    model = build_model(config("slot_memory", f"model.copy_init={copy_init}").model, seed=0)
    attention = model.decoder_blocks[0].layers[1]  # cross-attention
    q, k, v, o = (np.asarray(layer.kernel[...]) for layer in (attention.q, attention.k, attention.v, attention.o))
    taps = np.asarray(model.io.context_conv.kernel[...])
    assert np.array_equal(k, q) == copy_init and np.array_equal(o, v.T) == copy_init
    assert (np.unique(taps).size == 1) == copy_init
    if copy_init:  # W_q W_k^T and W_v W_o start positive definite: similarity scores, reads that keep their direction
        assert np.linalg.eigvalsh(q @ k.T).min() > 0 and np.linalg.eigvalsh(v @ o).min() > 0


@pytest.mark.parametrize("copy_init", [True, False])
def test_the_lm_baseline_gets_the_same_copying_start(copy_init):
    model = build_model(config("lm", f"model.copy_init={copy_init}").model, seed=0)
    for block in model.blocks:
        attention = block.mixer
        q, k, v, o = (np.asarray(layer.kernel[...]) for layer in (attention.q, attention.k, attention.v, attention.o))
        assert np.array_equal(k, q) == copy_init and np.array_equal(o, v.T) == copy_init
    assert load_config(EXPERIMENTS["lm"]).model.copy_init  # the context-QA baseline runs with it


def test_encdec_without_encoder_layers_reads_the_conv_context():
    """encoder_layers=0: no encoder block, the decoder cross-attends to the context's conv'd embeddings (and still
    reads the context); a negative count is a config error."""
    cfg, full = config("encdec", "model.encoder_layers=0"), config("encdec")
    model, batch = build_model(cfg.model, seed=0), batch_of(cfg)
    assert len(model.encoder_blocks) == 0
    assert count_params(model)["params"] < count_params(build_model(full.model, seed=0))["params"]
    shapes = example_shapes(cfg)
    ratio = model.forward_flops_per_example(shapes) / build_model(full.model, seed=0).forward_flops_per_example(shapes)
    assert ratio < 0.9
    base = logits_of(model, batch)
    other = dict(batch, context=batch["context"][:, ::-1])
    assert not np.allclose(np.asarray(logits_of(model, other)), np.asarray(base))
    with pytest.raises(ConfigError, match="model.encoder_layers=-1 must be an integer >= 0"):
        config("encdec", "model.encoder_layers=-1")


def test_bad_slot_knob_fails_clearly():
    with pytest.raises(ValueError, match="model.num_slots=0 must be a positive integer"):
        build_model(config("slot_memory", "model.num_slots=0").model, seed=0)


@pytest.mark.slow
def test_slot_model_trains_and_records_compute(tmp_path):
    """A batch without `inputs` goes through the generic loop; compute comes from the task's token count."""
    from memlab.train.loop import train

    cfg = config(
        "slot_memory",
        "model.d_model=16",
        "train.steps=12",
        "train.warmup_steps=2",
        "train.batch_size=8",
        "train.eval_every=6",
        "train.checkpoint_every=12",
        "train.log_every=6",
        "eval.num_examples=16",
        "eval.batch_size=8",
    )
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["flops_per_example"] == pytest.approx(
        3 * build_model(cfg.model, 0).forward_flops_per_example(example_shapes(cfg))
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["flops"] for r in rows] == pytest.approx([r["step"] * 8 * on_disk["flops_per_example"] for r in rows])
    assert np.isfinite(rows[-1]["eval/loss"])  # that it learns: test_slot_model_learns_context_qa

    # the slot probe reads the trained checkpoint; its per-slot reads are those encode_context uses
    from memlab.studies.slot_memory.slot_probe import load_trained, probe_slots, slot_reads

    model, _, step = load_trained(tmp_path)
    assert step == 12
    attention = model.slot_blocks[0].layers[0]  # copy_init: k starts as a copy of q, then trains on its own
    assert not np.array_equal(np.asarray(attention.k.kernel[...]), np.asarray(attention.q.kernel[...]))
    context = batch_of(cfg, n=3, split="eval")["context"]
    reads, vectors = slot_reads(model, context)
    np.testing.assert_allclose(vectors, np.asarray(model.encode_context(context)), atol=1e-5)
    assert reads.shape == (2, 3, 6, 48) and np.allclose(reads.sum(-1), 1.0, atol=1e-4)
    report = probe_slots(tmp_path, examples=4)
    summary = json.loads((report.parent / "slots.json").read_text())
    assert summary["slots"] == 6 and 0 <= summary["attention_on_facts"] <= 1 and summary["step"] == 12
    assert (report.parent / "slot_attention.png").stat().st_size > 0


@pytest.mark.slow
def test_slot_model_learns_context_qa(tmp_path):
    """L=64 -> k=8 slots, 4 facts among random distractors, all 4 asked: from chance (1 / 41 value tokens per
    token, 0.024; whole two-token answers 0.0006) to well above it in 500 steps, about half a minute here (the
    curve is in BENCHMARKS.md)."""
    cfg = load_config(
        EXPERIMENTS["slot_memory"],
        [
            "data.context_len=64",
            "data.num_facts=4",
            "data.questions_per_context=4",
            "model.num_slots=8",
            "train.steps=500",
            "train.warmup_steps=30",
            "train.eval_every=100",
            "train.checkpoint_every=500",
            "eval.num_examples=128",
            "logging.wandb_mode=disabled",
            "logging.progress=False",
        ],
    )
    from memlab.train.loop import train

    summary = train(cfg, tmp_path)
    assert summary["eval/accuracy"] > 0.3 and summary["eval/exact_match"] > 0.1
