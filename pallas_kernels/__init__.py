"""pallas_kernels: recurrent matrix-memory ops for JAX, each with a naive reference beside its fast kernels,
behind one dispatching API. Standalone: imports nothing from memlab.

Public ops (``backend="auto" | "reference" | "chunked" | "pallas"``)::

    delta_rule(q, k, v, beta, *, g=None, ...)    gated delta rule (error-correcting write)
    linear_attention(q, k, v, *, g=None, ...)    (gated) linear attention (Hebbian write)
    mlstm(q, k, v, i, f, ...)                    xLSTM's stabilised matrix LSTM
    dispatch                                     backend registry and the ``auto`` policy

Layout: one subpackage per op (``delta_rule/`` serves both delta_rule and linear_attention, ``mlstm/``), each
with the same four modules, so every kernel sits beside the oracle it is tested against:

    <op>/__init__.py     the public function(s) and the registration of the op's backends
    <op>/reference.py    token-serial ``lax.scan`` oracle, differentiated by plain autodiff
    <op>/chunked.py      pure-JAX chunked form (``lax.scan`` over chunks, hand-written backward)
    <op>/pallas.py       chunk-parallel Pallas kernels (Triton on GPUs, Mosaic on TPUs, interpreted on CPU)
    <op>/chunk_math.py   per-chunk forward / backward math shared by chunked.py and pallas.py

``_common/`` holds what the ops share: argument checks, the dispatch registry and ``auto`` policy, chunking and
segments, the Pallas lowering per platform with its grids and ``tuning`` knobs (value tile, Triton warps and
stages), shard_map variance, and the one ``jax.custom_vjp`` construction.

The names ``delta_rule`` and ``mlstm`` here are the functions; the subpackages of the same names are imported
by module path (``from pallas_kernels.mlstm.chunk_math import State``), not by attribute.
The benchmark CLI is ``python -m benchmarks.kernels`` at the repository root; figures are in BENCHMARKS.md.
"""

from ._common import dispatch
from ._common.pallas import tuning
from .delta_rule import delta_rule, linear_attention
from .mlstm import mlstm

__all__ = ["delta_rule", "dispatch", "linear_attention", "mlstm", "tuning"]
