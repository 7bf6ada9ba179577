"""The LM (its causality: tests/test_causality.py): parameters, analytic FLOPs against XLA, compute dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.models import build_model, count_params
from memlab.models.layers import mlp_width
from tests.helpers import analytic_and_xla_flops, logits_of


def test_segment_ids_block_attention_across_documents(tiny_config):
    model = build_model(tiny_config().model, seed=0)
    tokens = jax.random.randint(jax.random.key(2), (1, 32), 0, 64)
    seg = jnp.concatenate([jnp.zeros((1, 16), jnp.int32), jnp.ones((1, 16), jnp.int32)], axis=1)
    positions = jnp.concatenate([jnp.arange(16), jnp.arange(16)])[None]
    packed = logits_of(model, {"inputs": tokens, "segment_ids": seg, "positions": positions})
    alone = logits_of(model, {"inputs": tokens[:, 16:]})
    np.testing.assert_allclose(np.asarray(packed[:, 16:]), np.asarray(alone), atol=1e-5)


def test_param_count_matches_formula(tiny_config):
    cfg = tiny_config("model.d_model=48", "model.num_layers=3").model
    d, v, f = 48, cfg.vocab_size, mlp_width(48, cfg.mlp_ratio)
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    expected = 3 * per_layer + d + 2 * v * d
    counts = count_params(build_model(cfg, seed=0))
    assert counts == {"params": expected, "params_non_embedding": expected - 2 * v * d, "params_trainable": expected}


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.d_model=128", "model.num_heads=4", "data.seq_len=64", "data.vocab_size=512"),
        ("model.num_layers=4", "data.seq_len=128", "data.num_kv_pairs=8", "model.tie_embeddings=True"),
    ],
)
@pytest.mark.slow
def test_analytic_flops_match_xla_within_10_percent(tiny_config, overrides):
    cfg = tiny_config(*overrides)
    analytic, xla = analytic_and_xla_flops(cfg)
    assert xla is not None
    assert abs(analytic - xla) / xla < 0.10, (analytic, xla)


def test_bfloat16_compute_keeps_fp32_params(tiny_config):
    cfg = tiny_config("train.precision=bfloat16")
    assert cfg.model.dtype == "bfloat16"
    model = build_model(cfg.model, seed=0)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    tokens = jnp.zeros((2, 32), jnp.int32)
    out = logits_of(model, {"inputs": tokens})
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())
    ref = logits_of(build_model(tiny_config().model, seed=0), {"inputs": tokens})
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=0.1)
