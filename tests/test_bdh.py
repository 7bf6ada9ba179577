"""BDH (memlab.models.bdh) and its slow block (memlab.models.slow_block): the masked forward against a token-serial
numpy reading of the anchor's equations, decoding through the Hebbian state, causality, the anchor's parameter
count, FLOPs against XLA's, and the slow block's per-example, per-segment state (the anchor's bugs 2 and 3)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.config import load_config
from memlab.errors import ConfigError
from memlab.models import build_model, count_params
from tests.helpers import ROOT, analytic_and_xla_flops, assert_causal, decoded_logits, logits_of

EXPERIMENT = ROOT / "experiments" / "slow_weights.py"
LOGITS = nnx.jit(lambda model, *args, **kwargs: model.logits(*args, **kwargs))  # one program, not op by op


def bdh_config(text_corpus, *overrides):
    base = [f"data.path={text_corpus}", "model.d_model=8", "model.num_heads=2", "model.neuron_multiplier=4",
            "model.num_layers=2", "model.slow_layers=1", "model.slow_slots=4", "data.seq_len=16",
            "logging.wandb_mode=disabled", "logging.progress=False"]  # fmt: skip
    return load_config(EXPERIMENT, [*base, *overrides])


def open_gates(model, value=1.0):
    for block in model.slow.values():
        block.gate[...] = jnp.full(block.gate.shape, value)


def numpy_bdh(model, tokens):
    """The anchor's forward token by token in float64 numpy: neurons, RoPE by the anchor's phase formula, the
    strictly causal linear read of earlier tokens' values, the decoder, the slow block's gated read (addressed by
    the residual and its causal mean)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    cfg = model.cfg
    ln = lambda v: (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5)  # noqa: E731
    E, Ev, Dec = p["encoder"], p["encoder_v"], p["decoder"]
    h, d, n = E.shape
    freqs = 1.0 / cfg.rope_theta ** ((np.arange(n) // 2 * 2) / n) / (2 * math.pi)  # the anchor's get_freqs

    def rope(v, t):
        phase = (t * freqs) % 1 * 2 * math.pi
        rot = np.stack([-v[1::2], v[::2]], -1).reshape(-1)
        return v * np.cos(phase) + rot * np.sin(phase)

    out = []
    for row in np.asarray(tokens):
        x = ln(p["embed"]["embedding"][row])  # [T, D]
        T = len(row)
        for layer in range(cfg.num_layers):
            y = np.zeros_like(x)
            for t in range(T):
                z = []
                for head in range(h):
                    xs = np.maximum(x[t] @ E[head], 0)
                    read = sum(
                        (rope(xs, t) @ rope(np.maximum(x[s] @ E[head], 0), s)) * x[s] for s in range(t)
                    ) if t else np.zeros(d)  # fmt: skip
                    z.append(xs * np.maximum(ln(read) @ Ev[head], 0))
                y[t] = ln(x[t] + ln(np.concatenate(z) @ Dec))
            x = y
            if str(layer) in p["slow"]:
                s = p["slow"][str(layer)]
                context = ln(np.cumsum(x, 0) / np.arange(1, T + 1)[:, None])  # the mean of x over tokens so far
                q = np.maximum(np.concatenate([x, context], -1) @ s["address"]["kernel"], 0)
                q = q / np.maximum(1.0, q.sum(-1, keepdims=True))
                x = ln(x + np.tanh(s["gate"]) * (q @ s["memory"]))
        out.append(x @ p["unembed"]["kernel"])
    return np.stack(out)


@pytest.mark.slow
def test_masked_forward_matches_a_token_serial_reading_of_the_equations(text_corpus):
    model = build_model(bdh_config(text_corpus).model, seed=0)
    open_gates(model, 0.7)
    tokens = jax.random.randint(jax.random.key(0), (2, 7), 0, 64)
    np.testing.assert_allclose(logits_of(model, {"inputs": tokens}), numpy_bdh(model, tokens), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize(
    "overrides",
    [(), ("model.slow_hebbian=True", "model.slow_hebbian_lr=0.5"), ("model.slow_address=softmax",)],
    ids=["slow", "slow+hebbian", "softmax-address"],
)
def test_bdh_decodes_through_its_state_and_is_causal(text_corpus, overrides):
    model = build_model(bdh_config(text_corpus, *overrides).model, 0)
    open_gates(model)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 64)
    np.testing.assert_allclose(decoded_logits(model, tokens), logits_of(model, {"inputs": tokens}), atol=2e-5)
    vocab = model.cfg.vocab_size
    assert_causal(lambda t: logits_of(model, {"inputs": t}), tokens, vocab, positions=(0, 5, 11))
    assert_causal(lambda t: decoded_logits(model, t), tokens, vocab, positions=(0, 5), atol=1e-5)


def test_anchor_sized_bdh_has_the_anchors_parameter_count(text_corpus):
    cfg = bdh_config(text_corpus, "model.d_model=256", "model.num_heads=4", "model.neuron_multiplier=128",
                     "model.num_layers=6", "model.slow_layers=''", "model.meta_inner_steps=0")  # fmt: skip
    cfg.model.vocab_size = 256  # the anchor's bytes, without memlab's EOS id
    counts = count_params(nnx.eval_shape(lambda: build_model(cfg.model, 0)))
    assert counts["params"] == 3 * 4 * 256 * 8192 + 2 * 256 * 256 == 25_296_896  # 3 x 8,388,608 + 2 x 65,536


@pytest.mark.slow
def test_flops_match_xla(text_corpus):
    analytic, xla = analytic_and_xla_flops(
        bdh_config(text_corpus, "model.slow_hebbian=True", "objective={'next_token': 1.0}")
    )
    assert abs(analytic / xla - 1) < 0.1, (analytic, xla)


@pytest.mark.slow
def test_slow_memory_is_per_example_and_the_fast_state_resets_per_segment(text_corpus):
    model = build_model(bdh_config(text_corpus, "model.slow_hebbian=True", "model.slow_hebbian_lr=0.5").model, 0)
    open_gates(model)
    logits = functools.partial(LOGITS, model)
    tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, 64)
    memory = model.slow["1"].memory[...]
    base = logits(tokens, slow={1: jnp.stack([memory, memory])})
    shifted = memory + jax.random.normal(jax.random.key(4), memory.shape)  # (a constant shift LN would remove)
    other = logits(tokens, slow={1: jnp.stack([memory, shifted])})
    np.testing.assert_array_equal(base[0], other[0])  # example 1's memory never reaches example 0
    assert not np.allclose(base[1], other[1])
    segments = jnp.asarray([[0] * 5 + [1] * 7] * 2)
    positions = jnp.asarray([list(range(5)) + list(range(7))] * 2)
    packed = logits(tokens, positions, segments)
    alone = logits(tokens[:, 5:])
    np.testing.assert_allclose(packed[:, 5:], alone, atol=1e-5)  # the second document starts from a fresh state


@pytest.mark.slow
def test_episode_writes_each_examples_memory_from_its_own_document(text_corpus):
    cfg = bdh_config(text_corpus, "model.meta_inner_steps=2", "model.meta_inner_lr=50.0")
    model = build_model(cfg.model, 0)
    open_gates(model)
    k = jax.random.split(jax.random.key(3), 3)
    batch = {"doc_inputs": jax.random.randint(k[0], (2, 3, 10), 0, 64),
             "doc_targets": jax.random.randint(k[1], (2, 3, 10), 0, 64),
             "doc_mask": jnp.ones((2, 3, 10)), "inputs": jax.random.randint(k[2], (2, 3, 8), 0, 64)}  # fmt: skip
    logits = logits_of(model, batch)
    assert logits.shape == (2, 3, 8, cfg.model.vocab_size)
    changed = {**batch, "doc_targets": batch["doc_targets"].at[1].set(0)}
    after = logits_of(model, changed)
    np.testing.assert_array_equal(logits[0], after[0])
    assert not np.allclose(logits[1], after[1])  # the write took: example 1's probes read its new document
    unwritten = LOGITS(model, batch["inputs"].reshape(6, 8)).reshape(logits.shape)
    assert not np.allclose(logits, unwritten)


def test_bad_bdh_knobs_are_config_errors(text_corpus):
    for bad, says in [("model.slow_layers=5", "slow_layers"), ("model.num_heads=3", "even number"),
                      ("model.meta_inner_steps=-1", "meta_inner_steps")]:  # fmt: skip
        with pytest.raises(ConfigError, match=says):
            bdh_config(text_corpus, bad)
    with pytest.raises(ConfigError, match="meta_inner_steps"):
        bdh_config(text_corpus, "model.slow_layers=''")


@pytest.mark.slow
def test_without_text_gradient_the_slow_block_learns_from_episodes_only(text_corpus):
    from memlab.models.params import flat_params

    cfg = bdh_config(text_corpus, "model.slow_text_gradient=False", "model.meta_inner_steps=1")
    model = build_model(cfg.model, 0)
    open_gates(model)
    graphdef, params = nnx.split(model, nnx.Param)
    tokens = jax.random.randint(jax.random.key(5), (2, 10), 0, 64)
    grad = jax.jit(jax.grad(lambda p, batch: nnx.merge(graphdef, p)(batch)["logits"].std()))  # one program each
    text = flat_params(grad(params, {"inputs": tokens}))
    assert all(not np.any(text[n]) for n in text if n.startswith("slow/")) and np.any(text["encoder"])
    episode = {"doc_inputs": tokens[:, None], "doc_targets": tokens[:, None], "doc_mask": jnp.ones((2, 1, 10)),
               "inputs": tokens[:, None]}  # fmt: skip
    grads = flat_params(grad(params, episode))
    assert np.any(grads["slow/1/memory"]) and np.any(grads["slow/1/address/kernel"])
