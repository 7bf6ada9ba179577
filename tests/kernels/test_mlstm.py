"""mLSTM: chunked and Pallas (interpret) backends against the token-serial reference (forward, final state and
the gradients of every input, float64 and float32), every chunk size, state continuation, large input gates,
an independent numpy oracle, a closed form and argument validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_correctness import assert_close

import pallas_kernels
from pallas_kernels import dispatch, mlstm
from tests.helpers import make_inputs


def make_mlstm(B=2, T=13, H=2, K=3, V=4, *, dtype=jnp.float32, h0=False, segments=False, igate=(0.0, 2.0), seed=0):
    """q, k, v (and segment ids) from the delta-rule fixture; gates i ~ N(mean, std), f ~ N(2, 1) (forget gates
    around 0.88); a random initial state (C, n, m) in the accumulation dtype."""
    d = make_inputs(B, T, H, K, V, dtype=dtype, gated=False, segments=segments, key_scale=1.0, seed=seed)
    d.pop("beta")
    rng = np.random.default_rng(seed + 100)
    d["i"] = jnp.asarray(igate[0] + igate[1] * rng.standard_normal((B, T, H)), dtype)
    d["f"] = jnp.asarray(2.0 + rng.standard_normal((B, T, H)), dtype)
    if h0:
        acc = jnp.float64 if dtype == jnp.float64 else jnp.float32
        d["initial_state"] = tuple(jnp.asarray(rng.standard_normal(s), acc) for s in ((B, H, K, V), (B, H, K), (B, H)))
    return d


def call(d, backend, chunk, **kw):
    return mlstm(
        d["q"],
        d["k"],
        d["v"],
        d["i"],
        d["f"],
        initial_state=d.get("initial_state"),
        segment_ids=d.get("segment_ids"),
        chunk_size=chunk,
        backend=backend,
        return_final_state=True,
        **kw,
    )


def run(d, backend, chunk):
    """Outputs, final state and gradients w.r.t. q, k, v, i, f and the initial state, through jit."""
    names = [n for n in ("q", "k", "v", "i", "f", "initial_state") if n in d]

    @jax.jit
    def grads(diff):
        def loss(diff):
            h, s = call(dict(d, **diff), backend, chunk)
            hf = h.astype(s.C.dtype)
            w = jnp.cos(jnp.arange(hf.size, dtype=hf.dtype)).reshape(hf.shape)  # weights every output apart
            return jnp.sum(w * hf) + sum(jnp.sum(jnp.sin(x)) for x in s), (h, s)

        return jax.value_and_grad(loss, has_aux=True)(diff)

    (_, (h, s)), g = grads({n: d[n] for n in names})
    return h, s, g


def compare(d, backend, chunk, rtol, atol, ref=None):
    h_r, s_r, g_r = ref or run(d, "reference", chunk)
    h, s, g = run(d, backend, chunk)
    assert h.dtype == d["q"].dtype and h.shape == h_r.shape
    assert_close(h, h_r, rtol, atol, "output")
    for name, a, b in zip("Cnm", s, s_r, strict=True):
        assert_close(a, b, rtol, atol, f"final state {name}")
    assert set(g) == set(g_r)
    for a, b, path in zip(
        jax.tree.leaves(g), jax.tree.leaves(g_r), jax.tree_util.tree_flatten_with_path(g)[0], strict=True
    ):
        assert_close(a, b, rtol, atol, f"d{jax.tree_util.keystr(path[0])}")
    return h_r, s_r, g_r


_REF: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["chunked", "pallas", "pallas-loop"])
def test_matches_reference_x64_with_state_and_segments(x64, backend):
    """T = 13 with chunk 4 (ragged last chunk) and packed segments; sequence 0 starts from the empty state
    (0, 0, -inf), sequence 1 from a random one. "pallas-loop" drives the sequential passes as the GPU does (a
    loop over chunks in the kernel), "pallas" as the TPU does (a sequential grid axis)."""
    d = make_mlstm(dtype=jnp.float64, h0=True, segments=True)
    C, n, m = d["initial_state"]
    d["initial_state"] = (C.at[0].set(0.0), n.at[0].set(0.0), m.at[0].set(-jnp.inf))
    with pallas_kernels.tuning(sequential="loop" if backend == "pallas-loop" else None):
        _REF["x64"] = compare(d, backend.split("-")[0], 4, rtol=1e-9, atol=1e-11, ref=_REF.get("x64"))


@pytest.mark.parametrize("backend", ["chunked", "pallas"])
def test_fp32_with_input_gates_up_to_30(backend):
    """exp(30) would swamp float32 sums without the stabiliser; results and gradients stay finite and match."""
    d = make_mlstm(T=24, H=2, K=8, V=8, igate=(15.0, 8.0), seed=2)
    assert float(jnp.max(d["i"])) > 30
    _REF["fp32"] = compare(d, backend, 8, rtol=2e-4, atol=2e-4, ref=_REF.get("fp32"))


@pytest.mark.slow
def test_every_chunk_size_gives_the_reference(x64):
    T = 6  # chunks 4 and 5 leave a ragged last chunk
    d = make_mlstm(T=T, dtype=jnp.float64, seed=3)
    h_r, s_r = call(d, "reference", 1)
    for chunk in range(1, T + 1):
        h, s = jax.jit(lambda d, chunk=chunk: call(d, "chunked", chunk))(d)
        assert_close(h, h_r, 1e-10, 1e-12, f"output, chunk={chunk}")
        for name, a, b in zip("Cnm", s, s_r, strict=True):
            assert_close(a, b, 1e-10, 1e-12, f"state {name}, chunk={chunk}")


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_state_carries_over_between_calls(x64, backend):
    d = make_mlstm(T=10, dtype=jnp.float64, h0=True, seed=4)
    h, s = call(d, "reference", 4)
    T1 = 6
    first = {n: (x[:, :T1] if n != "initial_state" else x) for n, x in d.items()}
    h1, s1 = call(first, backend, 4)
    second = {n: x[:, T1:] for n, x in d.items() if n != "initial_state"}
    h2, s2 = call(dict(second, initial_state=s1), backend, 4)
    assert_close(jnp.concatenate([h1, h2], axis=1), h, 1e-10, 1e-12, "output")
    for name, a, b in zip("Cnm", s2, s, strict=True):
        assert_close(a, b, 1e-10, 1e-12, f"state {name}")


def _numpy_unstabilised(q, k, v, i, f, C0, n0, m0):
    """Literal xLSTM recurrence without stabiliser (float64, moderate gates): C <- f C + e^i k v^T, n <- f n +
    e^i k, h = C^T q~ / max(|n . q~|, 1), i.e. eps = 0; m from the parallel form's max of log-weights."""
    B, T, H, K = q.shape
    h = np.zeros(v.shape)
    C, n = C0 * np.exp(m0)[..., None, None], n0 * np.exp(m0)[..., None]
    logf = -np.log1p(np.exp(-f))
    for t in range(T):
        fg, ig = np.exp(logf[:, t]), np.exp(i[:, t])
        C = fg[..., None, None] * C + ig[..., None, None] * np.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])
        n = fg[..., None] * n + ig[..., None] * k[:, t]
        qt = q[:, t] * K**-0.5
        h[:, t] = np.einsum("bhkv,bhk->bhv", C, qt) / np.maximum(np.abs(np.sum(n * qt, -1)), 1.0)[..., None]
    L = np.cumsum(logf, axis=1)  # log-weight of token j in the final state: L_T - L_j + i_j; of the start: L_T + m0
    m = np.maximum(L[:, -1] + m0, np.max(L[:, -1:] - L + i, axis=1))
    return h, (C * np.exp(-m)[..., None, None], n * np.exp(-m)[..., None], m)


def test_numpy_oracle_unstabilised(x64):
    d = make_mlstm(T=9, H=2, K=3, V=4, dtype=jnp.float64, h0=True, seed=5)
    h_np, s_np = _numpy_unstabilised(*(np.asarray(d[n]) for n in "qkvif"), *(np.asarray(x) for x in d["initial_state"]))
    for backend in ("reference", "chunked"):
        h, s = call(d, backend, 4, eps=0.0)
        assert_close(h, h_np, 1e-10, 1e-12, f"{backend} output")
        for name, a, b in zip("Cnm", s, s_np, strict=True):
            assert_close(a, b, 1e-10, 1e-12, f"{backend} state {name}")


def test_closed_form_two_tokens(x64):
    """By hand: token 0 writes into the empty state (m_0 = i_0); token 1 keeps it with weight f_1 = sigmoid(2)."""
    q = np.array([[1.0, 0.0], [0.0, 2.0]])  # [T, K]; q~ = q / sqrt(2)
    k = np.array([[1.0, 1.0], [0.0, 1.0]])
    v = np.array([[2.0], [-1.0]])
    i, f = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    eps = 1e-6
    s = 2**-0.5
    # t = 0: C = k0 v0^T, n = k0, q~.k0 = s, m = 1: h0 = 2 s / (max(s, e^-1) + eps)
    h0 = 2 * s / (s + eps)
    # t = 1: m = max(log sig(2) + 1, 0); weights f' = sig(2) e^(1 - m), i' = e^(-m)
    m1 = max(np.log(1 / (1 + np.exp(-2.0))) + 1.0, 0.0)
    fp, ip = np.exp(np.log(1 / (1 + np.exp(-2.0))) + 1.0 - m1), np.exp(-m1)
    qk0, qk1 = 2 * s, 2 * s  # q~1 . k0 and q~1 . k1
    h1 = (fp * qk0 * 2.0 + ip * qk1 * -1.0) / (max(abs(fp * qk0 + ip * qk1), np.exp(-m1)) + eps)
    a = lambda x: jnp.asarray(x.reshape((1, 2, 1) + x.shape[1:]), jnp.float64)
    for backend in ("reference", "chunked"):
        h, st = mlstm(a(q), a(k), a(v), a(i), a(f), chunk_size=2, eps=eps, backend=backend, return_final_state=True)
        np.testing.assert_allclose(np.asarray(h)[0, :, 0, 0], [h0, h1], rtol=1e-12, err_msg=backend)
        np.testing.assert_allclose(float(st.m[0, 0]), m1, rtol=1e-12, err_msg=backend)
        np.testing.assert_allclose(np.asarray(st.n[0, 0]), fp * k[0] + ip * k[1], rtol=1e-12, err_msg=backend)


def test_value_errors_name_argument_and_shapes():
    d = make_mlstm(B=2, T=5, H=3, K=4, V=6, h0=True)
    C, n, m = d["initial_state"]
    cases = [
        (dict(i=d["i"][..., None]), r"i has shape \(2, 5, 3, 1\), expected \(B, T, H\) = \(2, 5, 3\)"),
        (dict(f=d["f"][:, :4]), r"f has shape \(2, 4, 3\), expected \(B, T, H\) = \(2, 5, 3\)"),
        (dict(f=d["f"].astype(jnp.int32)), r"f has dtype int32"),
        (dict(k=d["k"][..., :3]), r"k has shape \(2, 5, 3, 3\), expected \(B, T, H, K\) = \(2, 5, 3, 4\)"),
        (dict(initial_state=C), r"initial_state is ArrayImpl, expected a tuple \(C, n, m\)"),
        (
            dict(initial_state=(C, n[..., :2], m)),
            r"initial_state n has shape \(2, 3, 2\), expected \(B, H, K\) = \(2, 3, 4\)",
        ),
        (dict(initial_state=(C, n, m.astype(jnp.bfloat16))), r"initial_state m has dtype bfloat16 .* float32"),
        (dict(segment_ids=jnp.zeros((2, 5))), r"segment_ids has dtype float32"),
        (dict(chunk_size=0), r"chunk_size is 0"),
        (dict(backend="fast"), r"backend is 'fast'"),
        (dict(eps=-1.0), r"eps is -1.0"),
    ]
    for over, pattern in cases:
        a = dict(d, **over)
        pos = [a.pop(x) for x in ("q", "k", "v", "i", "f")]
        with pytest.raises(ValueError, match=pattern):
            mlstm(*pos, **a)


def test_auto_is_chunked():
    assert dispatch.resolve("mlstm", "auto")[0] == "chunked"
