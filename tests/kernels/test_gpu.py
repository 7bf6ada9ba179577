"""GPU-only checks of the Pallas (Triton) kernels against the reference; skipped cleanly elsewhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from pallas_kernels import delta_rule, linear_attention, mlstm
from tests.helpers import make_inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (Pallas Triton lowering)"),
]


def _loss_and_grads(d, backend, op):
    names = ["q", "k", "v", "beta", "g", "initial_state"] if op is delta_rule else ["q", "k", "v", "g", "initial_state"]

    def loss(x):
        pos = [x["q"], x["k"], x["v"]] + ([x["beta"]] if op is delta_rule else [])
        o, s = op(
            *pos,
            g=x["g"],
            initial_state=x["initial_state"],
            segment_ids=d["segment_ids"],
            return_final_state=True,
            backend=backend,
        )
        return jnp.sum(o.astype(jnp.float32) ** 2) + jnp.sum(s), (o, s)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))({n: d[n] for n in names})


@pytest.mark.parametrize("op", [delta_rule, linear_attention])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-3), (jnp.bfloat16, 3e-2)])
def test_pallas_gpu_matches_reference(op, dtype, tol):
    d = make_inputs(B=2, T=300, H=4, K=64, V=64, dtype=dtype, gated=True, h0=True, segments=True, key_scale=1 / 8)
    (_, (o, s)), g = _loss_and_grads(d, "pallas", op)
    (_, (o_r, s_r)), g_r = _loss_and_grads(d, "reference", op)
    for a, b in [(o, o_r), (s, s_r)] + [(g[n], g_r[n]) for n in g_r]:
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=tol * float(np.max(np.abs(b))), rtol=0)


def _close(pairs, tol):
    for a, b in pairs:
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=tol * float(np.max(np.abs(b))), rtol=0)


@pytest.mark.parametrize("K,V,block_v", [(128, 128, 64), (48, 40, None)])
def test_pallas_gpu_value_tiles_and_padded_heads(K, V, block_v):
    """Tiled state passes and heads the Triton kernels zero-pad to a power of two."""
    d = make_inputs(B=2, T=256, H=2, K=K, V=V, gated=True, h0=True, segments=True, key_scale=K**-0.5)
    with pallas_kernels.tuning(block_v=block_v, num_warps=8):
        (_, (o, s)), g = _loss_and_grads(d, "pallas", delta_rule)
    (_, (o_r, s_r)), g_r = _loss_and_grads(d, "reference", delta_rule)
    _close([(o, o_r), (s, s_r)] + [(g[n], g_r[n]) for n in g_r], 2e-3)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-3), (jnp.bfloat16, 3e-2)])
def test_pallas_gpu_mlstm_matches_reference(dtype, tol):
    rng = np.random.default_rng(0)
    B, T, H, K = 2, 300, 4, 64
    x = lambda *s: jnp.asarray(rng.standard_normal(s), dtype)
    q, k, v, i, f = x(B, T, H, K), x(B, T, H, K), x(B, T, H, K), x(B, T, H), x(B, T, H) + 3

    def run(backend):
        def loss(args):
            h, s = mlstm(*args, return_final_state=True, backend=backend)
            return jnp.sum(h.astype(jnp.float32) ** 2) + jnp.sum(s.C), (h, s.C)

        return jax.jit(jax.value_and_grad(loss, has_aux=True))((q, k, v, i, f))

    (_, (h, C)), g = run("pallas")
    (_, (h_r, C_r)), g_r = run("reference")
    _close([(h, h_r), (C, C_r)] + list(zip(g, g_r, strict=True)), tol)
