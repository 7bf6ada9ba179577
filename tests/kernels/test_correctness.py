"""Chunked and Pallas (interpret) backends against the token-serial reference: forward, final state and the
gradients of every input, at float64 (tight) and float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from pallas_kernels import delta_rule, linear_attention
from tests.helpers import assert_close, make_inputs, numpy_recurrence
from tests.helpers import run_kernel as run

OPS = {"delta_rule": delta_rule, "linear_attention": linear_attention}

_REFERENCE_CACHE: dict = {}


def compare(op, d, backend, chunk_size, rtol, atol, cache_key=None):
    """Compare ``backend`` with the reference; the reference result is cached under ``cache_key``."""
    if cache_key is not None and cache_key in _REFERENCE_CACHE:
        o_r, s_r, g_r = _REFERENCE_CACHE[cache_key]
    else:
        o_r, s_r, g_r = run(op, d, "reference", chunk_size)
        if cache_key is not None:
            _REFERENCE_CACHE[cache_key] = (o_r, s_r, g_r)
    o_b, s_b, g_b = run(op, d, backend, chunk_size)
    assert o_b.dtype == d["q"].dtype and o_b.shape == o_r.shape
    assert_close(o_b, o_r, rtol, atol, "output")
    assert_close(s_b, s_r, rtol, atol, "final state")
    assert set(g_b) == set(g_r)
    for name in g_r:
        assert_close(g_b[name], g_r[name], rtol, atol, f"d{name}")


# (T, H, K, V, chunk, gated, h0, segments): T not a multiple of the chunk, T = 1, H > 1, K != V.
CASES = {
    "ragged_T": dict(T=13, H=3, K=4, V=5, chunk=4, gated=False, h0=False, segments=False),
    "gated_h0": dict(T=13, H=2, K=5, V=3, chunk=4, gated=True, h0=True, segments=False),
    # chunk 32 also exercises the block merges of the blocked (I + A)^-1 (blocks of 16).
    "segments": dict(T=37, H=2, K=4, V=4, chunk=32, gated=True, h0=True, segments=True),
    "T1": dict(T=1, H=2, K=3, V=2, chunk=64, gated=True, h0=True, segments=False),
}


def _case(name, dtype):
    c = dict(CASES[name])
    chunk = c.pop("chunk")
    T, H, K, V = (c.pop(x) for x in "THKV")
    return make_inputs(
        B=2, T=T, H=H, K=K, V=V, dtype=dtype, gated=c["gated"], h0=c["h0"], segments=c["segments"]
    ), chunk


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("backend", ["chunked", "pallas"])
def test_matches_reference_x64(x64, backend, op, case):
    if backend == "pallas" and op == "linear_attention" and case in ("ragged_T", "T1"):
        pytest.skip("covered by the delta_rule cases; keeps the interpret-mode suite short")
    d, chunk = _case(case, jnp.float64)
    compare(op, d, backend, chunk, rtol=1e-9, atol=1e-11, cache_key=("x64", op, case))


def test_matches_reference_fp32_default_chunk():
    d = make_inputs(B=2, T=70, H=2, K=16, V=8, gated=True, h0=True, segments=True, key_scale=0.25)
    compare("delta_rule", d, "chunked", 64, rtol=2e-4, atol=2e-4)


def test_pallas_fp32_multichunk():
    d = make_inputs(B=1, T=24, H=2, K=8, V=8, gated=True, h0=True, segments=True, key_scale=0.35)
    compare("delta_rule", d, "pallas", 8, rtol=2e-4, atol=2e-4)


def test_auto_and_chunk_size_do_not_change_results(x64):
    d = make_inputs(B=1, T=37, H=2, K=4, V=6, dtype=jnp.float64, gated=True, h0=True, segments=True)
    args = (d["q"], d["k"], d["v"], d["beta"])
    kw = dict(g=d["g"], initial_state=d["initial_state"], segment_ids=d["segment_ids"], return_final_state=True)
    o_ref, s_ref = delta_rule(*args, **kw, backend="reference")
    for chunk in (1, 5, 64):
        o, s = delta_rule(*args, **kw, chunk_size=chunk, backend="auto")
        assert_close(o, o_ref, 1e-10, 1e-12, f"output, chunk={chunk}")
        assert_close(s, s_ref, 1e-10, 1e-12, f"state, chunk={chunk}")


def test_reference_matches_numpy_loop():
    """The oracle itself, against a literal transcription of the recurrence."""
    d = make_inputs(B=1, T=9, H=2, K=3, V=4, gated=True, h0=True, segments=True, seed=3)
    for op, delta in (("delta_rule", True), ("linear_attention", False)):
        o, S = numpy_recurrence(d, delta, scale=3**-0.5)
        args = (d["q"], d["k"], d["v"]) + ((d["beta"],) if delta else ())
        o_j, s_j = OPS[op](
            *args,
            g=d["g"],
            initial_state=d["initial_state"],
            segment_ids=d["segment_ids"],
            return_final_state=True,
            backend="reference",
        )
        np.testing.assert_allclose(o_j, o, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s_j, S, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sequential", ["grid", "loop"])
@pytest.mark.parametrize("op", list(OPS))
def test_pallas_value_tiles_x64(x64, op, sequential):
    """The sequential state passes split the value dim into tiles, one program each; tiles must not interact.
    Both drivers of the passes: chunks as a sequential grid axis (TPU) and as a loop in the kernel (GPU)."""
    d = make_inputs(B=1, T=21, H=2, K=4, V=8, dtype=jnp.float64, gated=True, h0=True, segments=True)
    with pallas_kernels.tuning(block_v=2, sequential=sequential):
        compare(op, d, "pallas", 8, rtol=1e-9, atol=1e-11)


def test_tuning_rejects_bad_knobs():
    d = make_inputs(B=1, T=8, H=1, K=4, V=6)
    with pytest.raises(ValueError, match="unknown tuning knobs"), pallas_kernels.tuning(warps=8):
        pass
    with pytest.raises(ValueError, match="block_v is 4, expected a power of two that divides the value dim V = 6"):
        with pallas_kernels.tuning(block_v=4):
            delta_rule(d["q"], d["k"], d["v"], d["beta"], backend="pallas")


@pytest.mark.slow
def test_zero_padded_heads_change_nothing(x64):
    """The Triton kernels run heads zero-padded to a power of two (>= 16): a zero key/query component neither
    writes nor reads and a zero value column stays zero, so padding must be exact, gradients included. Checked
    here on the interpreted kernels with explicitly padded inputs."""
    d = make_inputs(B=1, T=19, H=2, K=3, V=5, dtype=jnp.float64, gated=True, h0=True, segments=True)
    K, V, pk, pv = 3, 5, 13, 11
    w = jnp.cos(jnp.arange(19 * 2 * V, dtype=jnp.float64)).reshape(1, 19, 2, V)

    def loss(q, k, v, beta, h0):
        o, s = delta_rule(
            q, k, v, beta, g=d["g"], initial_state=h0, segment_ids=d["segment_ids"], scale=K**-0.5,
            return_final_state=True, chunk_size=8, backend="pallas",
        )  # fmt: skip
        return jnp.sum(w * o[..., :V]) + jnp.sum(jnp.sin(s[..., :K, :V])), (o, s)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)
    args = [d[n] for n in ("q", "k", "v", "beta", "initial_state")]
    feat = lambda x, n: jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n)])
    padded = [feat(args[0], pk), feat(args[1], pk), feat(args[2], pv), args[3]]
    padded.append(jnp.pad(args[4], [(0, 0), (0, 0), (0, pk), (0, pv)]))
    (_, (o, s)), g = grad(*args)
    (_, (o_p, s_p)), g_p = grad(*padded)
    assert_close(o_p[..., :V], o, 1e-12, 1e-13, "output")
    assert float(jnp.max(jnp.abs(o_p[..., V:]))) == 0.0
    assert_close(s_p[..., :K, :V], s, 1e-12, 1e-13, "state")
    for name, a, b in zip(("q", "k", "v", "beta", "h0"), g_p, g, strict=True):
        assert_close(a[tuple(slice(0, n) for n in b.shape)], b, 1e-12, 1e-13, f"d{name}")
