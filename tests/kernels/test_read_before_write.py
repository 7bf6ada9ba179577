"""Read-before-write (o_t = S_{t-1}^T (scale q_t)) in every backend at float64: outputs and final state against
a literal numpy loop, gradients against the reference scan (which reads before writing natively, while the
chunked backends shift the writes), the first reads of the sequence and of each segment, and small per-row heads
(K = 8, V = 1, scale = 1.0: delta-mem's layout)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import delta_rule, linear_attention
from tests.helpers import assert_close, make_inputs, numpy_recurrence, run_kernel

OPS = {"delta_rule": delta_rule, "linear_attention": linear_attention}
BACKENDS = ("reference", "chunked", "pallas")

# rows: one head per state row (K = 8, V = 1) with per-head beta and g, scale 1; plain: no decay, no initial
# state, one segment; normal: a larger head over several chunks with packed segments.
CASES = {
    "rows": dict(T=11, H=4, K=8, V=1, chunk=4, gated=True, h0=True, segments=True, scale=1.0),
    "plain": dict(T=9, H=2, K=4, V=3, chunk=4, gated=False, h0=False, segments=False, scale=None),
    "normal": dict(T=37, H=2, K=16, V=8, chunk=16, gated=True, h0=True, segments=True, scale=None),
}

_REFERENCE: dict = {}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_numpy_loop_and_reference_gradients_x64(x64, backend, op, case):
    c = dict(CASES[case])
    chunk, scale = c.pop("chunk"), c.pop("scale")
    d = make_inputs(B=2, dtype=jnp.float64, seed=5, **c)
    options = dict(read_before_write=True, scale=scale)
    o, s, grads = run_kernel(op, d, backend, chunk, **options)

    o_np, s_np = numpy_recurrence(d, op == "delta_rule", c["K"] ** -0.5 if scale is None else scale, True)
    assert_close(o, o_np, 1e-9, 1e-11, "output against the numpy loop")
    assert_close(s, s_np, 1e-9, 1e-11, "final state against the numpy loop")
    _, s_after, _ = run_kernel(op, d, backend, chunk, scale=scale)
    assert_close(s, s_after, 1e-12, 1e-13, "final state against the ordinary (read-after-write) kernel's")

    if (op, case) not in _REFERENCE:
        _REFERENCE[op, case] = run_kernel(op, d, "reference", chunk, **options)[2]
    assert set(grads) == set(_REFERENCE[op, case])
    for name, ref in _REFERENCE[op, case].items():
        assert_close(grads[name], ref, 1e-9, 1e-11, f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_reads_see_the_initial_state_then_zero_at_each_segment(x64, backend):
    d = make_inputs(B=1, T=8, H=2, K=3, V=2, dtype=jnp.float64, gated=True, h0=True, seed=2)
    seg = jnp.asarray([[0, 0, 0, 1, 1, 2, 2, 2]])
    args = (d["q"], d["k"], d["v"], d["beta"])
    common = dict(g=d["g"], segment_ids=seg, chunk_size=4, backend=backend, read_before_write=True)
    o, _ = delta_rule(*args, initial_state=d["initial_state"], **common)
    expect = jnp.einsum("bhkv,bhk->bhv", d["initial_state"], d["q"][:, 0] * 3**-0.5)
    assert_close(o[:, 0], expect, 1e-12, 1e-14, "o_0 = initial_state^T (scale q_0)")
    assert_close(o[:, jnp.asarray([3, 5])], 0.0, 0, 0, "first token of a segment")
    o, _ = linear_attention(*args[:3], **common)
    assert_close(o[:, jnp.asarray([0, 3, 5])], 0.0, 0, 0, "first token of the sequence and of each segment")


def test_read_before_write_must_be_a_bool():
    d = make_inputs(B=1, T=3, H=1, K=2, V=2)
    with pytest.raises(ValueError, match="read_before_write is 'yes'"):
        linear_attention(d["q"], d["k"], d["v"], read_before_write="yes")
    np.testing.assert_array_equal(linear_attention(d["q"], d["k"], d["v"], read_before_write=True)[0][:, 0], 0.0)
