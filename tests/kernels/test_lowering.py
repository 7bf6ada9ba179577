"""The Pallas backends lower to real accelerator kernels from this CPU-only machine: Mosaic (``tpu_custom_call``)
for TPUs and Triton for GPUs, forward and backward, at the head dims and dtypes users train with; and the
interpreter never leaks into an accelerator's lowering. Lowering proves the kernels are expressible for the
target (block shapes, primitives); compiling and running them needs the hardware (``scripts/gpu_check.sh``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import delta_rule, linear_attention, mlstm

# One custom call per pallas_call: forward (wy, states, output) and backward (wy, states, dstates, grads) of the
# delta rule; linear attention has no wy; the mLSTM has states + output, then states + dstates + grads.
KERNELS = {"delta_rule": 7, "linear_attention": 5, "mlstm": 5}
MARKERS = {"tpu": "tpu_custom_call", "cuda": "__gpu$xla.gpu.triton"}


def _grad_fn(op):
    def loss(q, k, v, a, b):
        if op == "mlstm":
            o, s = mlstm(q, k, v, a, b, return_final_state=True, backend="pallas")
            return jnp.sum(o.astype(jnp.float32) ** 2) + jnp.sum(s.C) + jnp.sum(s.n)
        if op == "delta_rule":
            o, s = delta_rule(q, k, v, a, g=b, return_final_state=True, backend="pallas")
        else:
            o, s = linear_attention(q, k, v, g=b, return_final_state=True, backend="pallas")
        return jnp.sum(o.astype(jnp.float32) ** 2) + jnp.sum(s)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))


def _lowered(op, platform, B, T, H, K, V, dtype):
    x = lambda *s: jax.ShapeDtypeStruct(s, dtype)
    args = (x(B, T, H, K), x(B, T, H, K), x(B, T, H, V), x(B, T, H), x(B, T, H))
    return _grad_fn(op).trace(*args).lower(lowering_platforms=(platform,)).as_text()


SHAPES = [  # (K, V, dtype): the head dims of the grid, a ragged sequence, non-power-of-two heads
    (64, 64, jnp.float32),
    (128, 128, jnp.bfloat16),
    (256, 256, jnp.float32),
    (64, 256, jnp.bfloat16),
    (48, 40, jnp.float32),
]


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
@pytest.mark.parametrize("op", list(KERNELS))
@pytest.mark.parametrize("K,V,dtype", SHAPES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_forward_and_backward_lower_to_the_platforms_kernels(platform, op, K, V, dtype):
    text = _lowered(op, platform, B=2, T=200, H=2, K=K, V=V, dtype=dtype)
    assert text.count(MARKERS[platform]) == KERNELS[op]
    other = MARKERS["cuda" if platform == "tpu" else "tpu"]
    assert other not in text
    # The interpreter would show up as the loops of its grid; a compiled lowering has none outside the kernels.
    assert "stablehlo.while" not in text


def test_cpu_lowering_interprets():
    text = _lowered("delta_rule", "cpu", B=1, T=40, H=1, K=8, V=8, dtype=jnp.float32)
    assert "stablehlo.while" in text
    assert not any(m in text for m in MARKERS.values())
