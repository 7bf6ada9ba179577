"""What the Pallas kernels of every op share: when to interpret, the (batch, head) grid with its BlockSpecs,
the loading of one chunk from the refs, and the ``pallas_call`` itself.

Every kernel has one program per (batch, head) that walks the chunks sequentially, so each block holds a
whole [T, D] sequence of one head and the kernel slices chunks out of it with ``pl.ds``. On CPU the kernels
run with ``interpret=True`` (slow, for testing); on NVIDIA GPUs they lower through Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .checks import acc_dtype
from .chunking import effective_chunk
from .vma import match_vma, out_struct

# Chunk multiple the compiled (non-interpreted) kernels need: tensor-core dots want 16 rows.
COMPILED_CHUNK_MULTIPLE = 16


def interpret_and_chunk(interpret: bool | None, T: int, chunk_size: int) -> tuple[bool, int]:
    """(interpret, chunk length) of a Pallas call: ``interpret`` defaults to True everywhere except on GPU,
    and a compiled kernel's chunk is a multiple of ``COMPILED_CHUNK_MULTIPLE``."""
    if interpret is None:
        interpret = jax.default_backend() not in ("gpu", "cuda", "rocm")
    multiple = 1 if interpret else COMPILED_CHUNK_MULTIPLE
    return bool(interpret), effective_chunk(T, chunk_size, multiple=multiple)


def geometry(q: jax.Array, v: jax.Array, C: int) -> tuple[int, int, int, int, int, int, Any]:
    """(B, padded T, H, K, V, number of chunks, accumulation dtype) of a call's inputs."""
    B, Tp, H, K = q.shape
    return B, Tp, H, K, v.shape[-1], Tp // C, acc_dtype(q.dtype)


def specs(
    Tp: int, K: int, V: int, NC: int
) -> tuple[Callable[[int], pl.BlockSpec], pl.BlockSpec, pl.BlockSpec, pl.BlockSpec]:
    """BlockSpecs of the (batch, head) grid: (per-token [T, D] for a given D, per-token scalar [T], state
    [K, V], per-chunk states [NC, K, V])."""
    tok = lambda D: pl.BlockSpec((None, Tp, None, D), lambda b, h: (b, 0, h, 0))
    scal = pl.BlockSpec((None, Tp, None), lambda b, h: (b, 0, h))
    state = pl.BlockSpec((None, None, K, V), lambda b, h: (b, h, 0, 0))
    states = pl.BlockSpec((None, None, NC, K, V), lambda b, h: (b, h, 0, 0, 0))
    return tok, scal, state, states


def load_chunk(
    sl: Any, q_ref: Any, k_ref: Any, v_ref: Any, gate_ref: Any, G_ref: Any, c_ref: Any, scale: float, acc: Any
) -> tuple[jax.Array, ...]:
    """One chunk (rows ``sl``) of q (times ``scale``), k, v, a per-token gate (None if ``gate_ref`` is), the
    chunk-local log-decay G and reset count c, in the accumulation dtype (c stays int)."""
    q = q_ref[sl, :].astype(acc) * jnp.asarray(scale, acc)
    k = k_ref[sl, :].astype(acc)
    v = v_ref[sl, :].astype(acc)
    gate = None if gate_ref is None else gate_ref[sl].astype(acc)
    return q, k, v, gate, G_ref[sl].astype(acc), c_ref[sl]


def call(
    kernel: Callable[..., None],
    ins: Sequence[Any],
    in_specs: Sequence[Any],
    outs: Sequence[tuple[tuple[int, ...], Any]],
    out_specs: Sequence[Any],
    *,
    grid: tuple[int, int],
    interpret: bool,
    name: str,
) -> list[jax.Array]:
    """Run ``kernel`` over ``grid`` on ``ins`` (cast to one shard_map variance) with outputs given as
    (shape, dtype) pairs that vary like the inputs."""
    ins = [match_vma(x, *ins) for x in ins]
    out_shape = [out_struct(shape, dtype, ins[0]) for shape, dtype in outs]
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as plgpu

        compiler_params = plgpu.CompilerParams(num_warps=4, num_stages=1)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=list(in_specs),
        out_specs=list(out_specs),
        interpret=interpret,
        compiler_params=compiler_params,
        name=name,
    )(*ins)
