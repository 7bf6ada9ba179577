"""Matmul FLOPs of the chunked algorithms in pallas_kernels, so the kernel benchmark can report achieved TFLOP/s
and % of the device's peak, the same number for every backend and for flash-linear-attention at one point.

What is counted: the matrix products of the per-chunk math (pallas_kernels/<op>/chunk_math.py), 2 FLOPs per
multiply-add, as dense products of the sizes written there (the causal and triangular masks are applied after
full products, so no product is halved). Elementwise work (masks, exponentials, gates, row sums, matrix-vector
products such as the mLSTM normaliser) is excluded, as the levanter/fla-style counts exclude it; XLA's own count
of the chunked forward lies 1-6% above ours for that reason (tests/kernels/test_kernel_flops.py).

Per chunk of C tokens (C = min(chunk, T), T padded to a multiple of C), with K, V the head dims:

  delta rule forward   Q K^T, K K^T          2 x 2 C^2 K
                       (I + A)^-1            2/3 C^3            (unit lower-triangular inverse, C^3/3 mult-adds)
                       K S0, T (beta ...)    2 C K V + 2 C^2 V
                       (a Q) S0 + P U        2 C K V + 2 C^2 V
                       (b K)^T U             2 C K V
                       = 4 C^2 K + 4 C^2 V + 6 C K V + 2/3 C^3
  delta rule backward  chunk_backward's products: dU, dP, dq, dk, dS0, dO S0^T, U dS1^T, T^T dU, dA,
                       (beta a K)^T dY, dY S0^T, (bdB + bdB^T) K
                       = 6 C^2 K + 8 C^2 V + 12 C K V
  linear attention     forward Q K^T, (a Q) S0, P V, (b K)^T V     = 2 C^2 K + 2 C^2 V + 4 C K V
                       backward (chunk_backward without the delta terms) = 4 C^2 K + 4 C^2 V + 8 C K V
  mLSTM                forward Q K^T, Q C0, P V, (b K)^T V         = 2 C^2 K + 2 C^2 V + 4 C K V
                       backward dnum V^T, dnum C0^T, dS K, dS^T Q, (S W)^T dnum, (a Q)^T dnum, K dC, V dC^T
                                                                   = 4 C^2 K + 4 C^2 V + 8 C K V

Forward+backward is forward + backward: "model" FLOPs, as MFU counts them. What the backends recompute in the
backward (the chunk states, U and (I + A)^-1, Q K^T and K K^T, mLSTM's forward inside chunk_backward) is not
counted, so the achieved TFLOP/s of implementations that recompute different amounts stay comparable.

Another convention: delta-rule benchmark scripts built on fla (fla's own benchmarks report times only) use
2 B T H D (6 D + 8 C) for the forward with C = 64: 12 D^2 + 16 C D per token where the products above are
6 D^2 + 8 C D + 2/3 C^2 (K = V = D), about twice ours at D = 128, so figures from it are not comparable with these.
"""

from __future__ import annotations

from typing import NamedTuple


class Flops(NamedTuple):
    fwd: float
    fwd_bwd: float


def _chunks(B: int, T: int, H: int, chunk: int) -> tuple[int, int]:
    """(C, number of (batch, head, chunk) blocks): the chunk length the backends use and how many they run."""
    C = min(chunk, T)
    return C, B * H * -(-T // C)


def delta_rule_flops(B: int, T: int, H: int, K: int, V: int, chunk: int = 64) -> Flops:
    """Matmul FLOPs of the chunked (gated) delta rule; the gate changes no product."""
    C, n = _chunks(B, T, H, chunk)
    fwd = 4 * C * C * K + 4 * C * C * V + 6 * C * K * V + 2 * C**3 / 3
    bwd = 6 * C * C * K + 8 * C * C * V + 12 * C * K * V
    return Flops(n * fwd, n * (fwd + bwd))


def linear_attention_flops(B: int, T: int, H: int, K: int, V: int, chunk: int = 64) -> Flops:
    """Matmul FLOPs of chunked (gated) linear attention: the delta rule without the solve and its terms."""
    C, n = _chunks(B, T, H, chunk)
    fwd = 2 * C * C * K + 2 * C * C * V + 4 * C * K * V
    bwd = 4 * C * C * K + 4 * C * C * V + 8 * C * K * V
    return Flops(n * fwd, n * (fwd + bwd))


def mlstm_flops(B: int, T: int, H: int, K: int, V: int, chunk: int = 64) -> Flops:
    """Matmul FLOPs of the chunkwise mLSTM: linear attention's products (the stabiliser is elementwise)."""
    return linear_attention_flops(B, T, H, K, V, chunk)


FLOPS = {"delta_rule": delta_rule_flops, "linear_attention": linear_attention_flops, "mlstm": mlstm_flops}
