"""The kernel benchmark's FLOP model (benchmarks/kernel_flops.py) against what the code runs: XLA's count of the
chunked forward over one chunk, the matrix products in the per-chunk backward, and the benchmark's new fields."""

from __future__ import annotations

import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import kernels
from benchmarks.kernel_flops import FLOPS, delta_rule_flops
from memlab.train import hardware
from pallas_kernels import delta_rule, linear_attention, mlstm
from pallas_kernels.delta_rule import chunk_math as dm
from pallas_kernels.mlstm import chunk_math as mm

# XLA also counts the elementwise work the model leaves out (masks, exponentials, the base blocks of the inverse):
# 1-6% more at these shapes. One missing C K V product would be ~20% less, so the band still catches a wrong term.
XLA_EXCESS = (1.0, 1.06)
SHAPES = [(2, 3, 64, 128, 128), (1, 2, 32, 128, 64)]  # (B, H, C = T, K, V)


def _rand(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _xla_flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])


def _one_chunk_call(op, B, H, C, K, V):
    """(function, arguments) of ``op``'s chunked backend over one chunk, with an initial state and the final state
    returned so that no product is constant-folded or dead."""
    q, k, v, g, h0 = _rand(B, C, H, K), _rand(B, C, H, K, seed=1), _rand(B, C, H, V), _rand(B, C, H), _rand(B, H, K, V)
    kw = dict(initial_state=h0, return_final_state=True, chunk_size=C, backend="chunked")
    decay = -jax.nn.softplus(g)
    if op == "delta_rule":
        return lambda q, k, v, b, g: delta_rule(q, k, v, b, g=g, **kw), (q, k, v, jax.nn.sigmoid(g), decay)
    if op == "linear_attention":
        return lambda q, k, v, g: linear_attention(q, k, v, g=g, **kw), (q, k, v, decay)
    kw["initial_state"] = (h0, _rand(B, H, K), _rand(B, H))
    return lambda q, k, v, i, f: mlstm(q, k, v, i, f, **kw), (q, k, v, g, g + 3.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["delta_rule", "linear_attention", "mlstm"])
def test_forward_flops_match_xla_cost_analysis(op, shape):
    B, H, C, K, V = shape
    fn, args = _one_chunk_call(op, B, H, C, K, V)
    ratio = _xla_flops(fn, *args) / FLOPS[op](B, C, H, K, V, chunk=C).fwd
    assert XLA_EXCESS[0] <= ratio <= XLA_EXCESS[1], ratio


def _dot_flops(jaxpr) -> int:
    """2 x multiply-adds of every dot_general in ``jaxpr`` and the jaxprs nested in it."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
        for p in eqn.params.values():
            sub = getattr(p, "jaxpr", p)
            if hasattr(sub, "eqns"):
                total += _dot_flops(sub)
    return total


def _backward_model(op, C, K, V) -> float:
    f = FLOPS[op](1, C, 1, K, V, chunk=C)
    return f.fwd_bwd - f.fwd


@pytest.mark.parametrize("delta", [True, False])
def test_delta_rule_backward_flops_are_chunk_backwards_products(delta):
    C, K, V = 32, 16, 24
    q, k, v, S0, dS1, dO = _rand(C, K), _rand(C, K, seed=1), _rand(C, V), _rand(K, V), _rand(K, V, seed=1), _rand(C, V)
    beta, G = jax.nn.sigmoid(_rand(C)), jnp.cumsum(-jax.nn.softplus(_rand(C, seed=1)))
    m = dm.masks(G, jnp.zeros(C, jnp.int32))
    QK, KK = dm.gram(q, k, delta)  # recomputed forward quantities, passed in so that only the gradient is traced
    fac = dm.BlockedSolver.prepare(jnp.tril(KK, -1)) if delta else None

    def backward(q, k, v, beta, S0, dS1, dO):
        return dm.chunk_backward(q, k, v, beta, S0, dS1, dO, v, fac, QK, KK, m, dm.BlockedSolver, delta)

    jaxpr = jax.make_jaxpr(backward)(q, k, v, beta, S0, dS1, dO).jaxpr
    assert _dot_flops(jaxpr) == _backward_model("delta_rule" if delta else "linear_attention", C, K, V)


def test_mlstm_backward_flops_are_chunk_backwards_products():
    C, K, V = 32, 16, 24
    q, k, v, dh = _rand(C, K), _rand(C, K, seed=1), _rand(C, V), _rand(C, V, seed=1)
    ig, G, c = _rand(C), jnp.cumsum(jax.nn.log_sigmoid(_rand(C, seed=1) + 3.0)), jnp.zeros(C, jnp.int32)
    s = mm.State(_rand(K, V), _rand(K), jnp.zeros(()))
    ds = mm.State(_rand(K, V, seed=1), _rand(K, seed=1), jnp.ones(()))
    both = jax.make_jaxpr(lambda q, k, v: mm.chunk_backward(q, k, v, ig, G, c, s, dh, ds, 1e-6))(q, k, v).jaxpr
    recomputed = jax.make_jaxpr(lambda q, k, v: mm.chunk_output(q, k, v, ig, G, c, s, 1e-6))(q, k, v).jaxpr
    assert _dot_flops(both) - _dot_flops(recomputed) == _backward_model("mlstm", C, K, V)


def test_benchmark_rows_report_tflops_and_no_peak_on_cpu(tmp_path):
    argv = ["--B", "1", "--T", "40", "--H", "2", "--K", "16", "--backends", "chunked", "--reps", "1"]
    (row,) = kernels.main([*argv, "--chunk-size", "16", "--out", str(tmp_path / "k.json")])
    flops = delta_rule_flops(1, 40, 2, 16, 16, chunk=16)
    assert (row["fwd_flops"], row["fwd_bwd_flops"]) == (flops.fwd, flops.fwd_bwd)
    assert row["fwd_tflops"] == pytest.approx(flops.fwd / row["fwd_s"] / 1e12)
    assert row["fwd_pct_peak"] is None and row["fwd_bwd_pct_peak"] is None  # a CPU has no peak in the table


def test_percent_of_peak_is_against_the_given_peak():
    flops = delta_rule_flops(4, 4096, 16, 128, 128)
    peak = hardware.peak_flops("NVIDIA H200", hardware.BF16)
    r = kernels._throughput(flops, 1e-3, 3e-3, peak)
    assert r["fwd_pct_peak"] == pytest.approx(100 * flops.fwd / 1e-3 / peak)
    assert r["fwd_bwd_tflops"] == pytest.approx(flops.fwd_bwd / 3e-3 / 1e12)


def test_fla_row_is_skipped_as_not_installed_without_fla():
    if importlib.util.find_spec("fla") is not None:
        pytest.skip("fla is installed here")
    assert kernels._bench_fla_row(reps=1)["skipped"].startswith("fla not installed")


def test_fla_comparison_reuses_the_grids_rows_at_flas_point(monkeypatch, tmp_path):
    """--fla times only the --fla-backends the grid has not measured at fla's point (timings and fla faked)."""
    timed = []

    def fake_point(backend, B, T, *rest, **kw):
        timed.append(backend)
        return kernels._timings(B * T, 1.0, 3.0, None, None)

    def no_fla(*args):
        raise ModuleNotFoundError("No module named 'fla'")

    monkeypatch.setattr(kernels, "bench_point", fake_point)
    monkeypatch.setattr(kernels, "bench_fla", no_fla)
    monkeypatch.setattr(kernels.jax, "default_backend", lambda: "gpu")
    argv = ["--B", "4", "--T", "4096", "--H", "16", "--K", "128", "--dtype", "bfloat16", "--backends", "pallas"]
    rows = kernels.main([*argv, "--fla", "--fla-backends", "pallas,chunked", "--out", str(tmp_path / "k.json")])
    assert timed == ["pallas", "chunked"]
    assert [r["backend"] for r in rows] == ["pallas", "fla", "chunked"]
    assert rows[2]["fwd_bwd_flops"] == delta_rule_flops(4, 4096, 16, 128, 128).fwd_bwd
    assert rows[1]["skipped"].startswith("fla not installed")
