"""Attention windows (`model.attention_window`, issue 17 item 3): windowed attention against independent
references, and hybrids whose matrix-memory state spans the whole sequence while attention sees W tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.config import ConfigError
from memlab.models import build_model
from memlab.models.layers import rope
from memlab.models.mixers.attn import CausalSelfAttention
from tests.helpers import decoded_logits, logits_of

W, T = 4, 14  # T not a multiple of W: the last block is partial


def attention_mixer(tiny_config, window: int, kind: str = "sliding") -> CausalSelfAttention:
    """The attn mixer of a tiny config; the same seed gives the same weights whatever the window."""
    cfg = tiny_config(f"model.attention_window={window}", f"model.attention_window_kind={kind}").model
    return CausalSelfAttention(cfg, rngs=nnx.Rngs(0))


def mixer_inputs():
    x = jax.random.normal(jax.random.key(0), (2, T, 32))
    return x, jnp.broadcast_to(jnp.arange(T), (2, T))


@pytest.mark.slow
def test_block_windows_equal_full_attention_on_each_block(tiny_config):
    x, positions = mixer_inputs()
    windowed = attention_mixer(tiny_config, W, "block")(x, positions=positions)
    full = attention_mixer(tiny_config, 0)
    blocks = [full(x[:, s : s + W], positions=positions[:, s : s + W]) for s in range(0, T, W)]
    np.testing.assert_allclose(np.asarray(windowed), np.asarray(jnp.concatenate(blocks, axis=1)), atol=1e-5)


def test_sliding_windows_equal_a_token_serial_softmax(tiny_config):
    x, positions = mixer_inputs()
    mixer = attention_mixer(tiny_config, W, "sliding")
    heads = lambda y: y.reshape(2, T, mixer.num_heads, mixer.head_dim)
    q = rope(heads(mixer.q(x)), positions, mixer.rope_theta)
    k = rope(heads(mixer.k(x)), positions, mixer.rope_theta)
    v = heads(mixer.v(x))
    rows = []
    for t in range(T):
        lo = max(0, t - W + 1)
        scores = jnp.einsum("bhd,bshd->bhs", q[:, t], k[:, lo : t + 1]) / np.sqrt(mixer.head_dim)
        rows.append(jnp.einsum("bhs,bshd->bhd", jax.nn.softmax(scores, axis=-1), v[:, lo : t + 1]))
    reference = mixer.o(jnp.stack(rows, axis=1).reshape(2, T, -1))
    np.testing.assert_allclose(np.asarray(mixer(x, positions=positions)), np.asarray(reference), atol=1e-5)


def perturbed_first_token(model, tokens):
    """How much each position's logits [B, T] move when token 0 changes."""
    changed = tokens.at[:, 0].set((tokens[:, 0] + 7) % model.cfg.vocab_size)
    return np.abs(np.asarray(logits_of(model, {"inputs": changed}) - logits_of(model, {"inputs": tokens}))).max(-1)


@pytest.mark.parametrize("mixers, kind", [("attn,gdn", "sliding"), ("attn,gdn", "block"), ("deltanet,attn", "block")])
def test_windowed_hybrid_decodes_like_its_parallel_forward_and_remembers_past_the_window(tiny_config, mixers, kind):
    """The token-serial reference is the decoding path (KV cache + recurrent state); the matrix memory carries
    token 0 to positions that no attention window reaches."""
    cfg = tiny_config(
        f"model.mixers={mixers}",
        f"model.attention_window={W}",
        f"model.attention_window_kind={kind}",
        "model.matrix_chunk_size=8",
    ).model
    model = build_model(cfg, seed=0)
    tokens = jax.random.randint(jax.random.key(1), (2, T), 0, cfg.vocab_size)
    np.testing.assert_allclose(
        np.asarray(decoded_logits(model, tokens)), np.asarray(logits_of(model, {"inputs": tokens})), atol=2e-5
    )
    assert (perturbed_first_token(model, tokens)[:, W:] > 1e-5).all()


@pytest.mark.parametrize("kind", ["sliding", "block"])
def test_one_windowed_attention_layer_forgets_what_left_the_window(tiny_config, kind):
    cfg = tiny_config(
        "model.mixers=attn", "model.num_layers=1", f"model.attention_window={W}", f"model.attention_window_kind={kind}"
    ).model
    model = build_model(cfg, seed=0)
    moved = perturbed_first_token(model, jax.random.randint(jax.random.key(1), (2, T), 0, cfg.vocab_size))
    assert (moved[:, 0] > 1e-4).all() and (moved[:, W:] < 1e-6).all()


@pytest.mark.parametrize("kind", ["sliding", "block"])
def test_packed_documents_reset_windows_and_state(tiny_config, kind):
    """Document 2 packed after document 1 (of a length that is no multiple of W) reads as if alone: attention
    windows restart with its positions and the gdn state starts afresh."""
    cfg = tiny_config(
        "model.mixers=attn,gdn",
        f"model.attention_window={W}",
        f"model.attention_window_kind={kind}",
        "model.matrix_chunk_size=8",
    ).model
    model = build_model(cfg, seed=0)
    first = 7
    tokens = jax.random.randint(jax.random.key(2), (1, 2 * T), 0, cfg.vocab_size)
    seg = (jnp.arange(2 * T) >= first).astype(jnp.int32)[None]
    positions = jnp.concatenate([jnp.arange(first), jnp.arange(2 * T - first)])[None]
    packed = logits_of(model, {"inputs": tokens, "segment_ids": seg, "positions": positions})
    alone = logits_of(model, {"inputs": tokens[:, first:]})
    np.testing.assert_allclose(np.asarray(packed[:, first:]), np.asarray(alone), atol=1e-5)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.attention_window=-1", "model.attention_window"),
        ("model.attention_window_kind=diagonal", "model.attention_window_kind"),
    ],
)
def test_bad_window_settings_are_config_errors_naming_the_key(tiny_config, override, key):
    with pytest.raises(ConfigError, match=key):
        tiny_config(override)
