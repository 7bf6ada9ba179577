"""What the Pallas kernels of every op share: the choice of lowering per platform, the head-major layout, the
BlockSpecs of the chunk-parallel grids, the tuning knobs and the ``pallas_call`` itself.

**Per platform, at lowering time.** A Pallas backend is built once per lowering kind (``interpret`` on CPU,
``triton`` on NVIDIA and AMD GPUs, ``mosaic`` on TPU) and the three builds are joined by
``jax.lax.platform_dependent``, which lowers only the branch of the platform a computation is lowered for. So a
CPU-only machine can lower the real Triton and Mosaic kernels (``jit(f).trace(...).lower(lowering_platforms=
("cuda",))``) and an accelerator never silently runs the interpreter. ``interpret=True`` forces the interpreter.

**Layout.** Kernels see head-major arrays: per-token tensors [B, H, T, D], per-token scalars as columns
[B, H, T, 1] and states [B, H, K, V], so that every block's last two dims are (rows, features), as Mosaic's
(8, 128) tiling and Triton's 2-D blocks want. Rank-1 blocks are avoided: Mosaic needs the TPU generation to
check them, which a CPU-only lowering does not have.

**Grids.** The chunk-parallel kernels use (batch, head, chunk[, value tile]) grids whose blocks are one chunk.
The sequential passes (:func:`sequential`) have (batch, head, value tile) programs and a pure per-chunk step,
driven in one of two ways: on TPU the chunks are the last grid axis, marked "arbitrary" so its steps run in
order, with the carry in VMEM scratch and one chunk's blocks in VMEM at a time (Mosaic pipelines their DMA);
on GPU, whose grid programs run concurrently, the kernel loops over the chunks of whole-sequence blocks. The
interpreter runs either (the TPU's by default), so both are tested on a CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from .chunking import effective_chunk
from .vma import match_vma, out_struct

PLATFORM_KINDS = {"cpu": "interpret", "cuda": "triton", "rocm": "triton", "tpu": "mosaic"}
# Row multiple of a compiled chunk: tensor-core dots want 16 rows (Triton), Mosaic tiles rows by 8 (16 for bf16).
COMPILED_CHUNK_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Knobs of the kernels, read when a function is traced (a jitted function keeps the values it was traced
    with). ``block_v``: value-dimension tile of the state passes (None: the platform's default);
    ``num_warps``/``num_stages``: Triton's launch parameters; ``sequential``: how the interpreter drives the
    sequential passes, "grid" (as on TPU, the default) or "loop" (as on GPU), so that both run on a CPU."""

    block_v: int | None = None
    num_warps: int = 4
    num_stages: int = 1
    sequential: str | None = None


_TUNING: contextvars.ContextVar[Tuning | None] = contextvars.ContextVar("pallas_kernels_tuning", default=None)


@contextlib.contextmanager
def tuning(**knobs: Any) -> Iterator[Tuning]:
    """Set kernel knobs (see :class:`Tuning`) for the functions traced inside the block."""
    allowed = {f.name for f in dataclasses.fields(Tuning)}
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"unknown tuning knobs {unknown}, expected some of {sorted(allowed)}")
    if knobs.get("sequential") not in (None, "grid", "loop"):
        raise ValueError(f"tuning sequential is {knobs['sequential']!r}, expected 'grid' or 'loop'")
    token = _TUNING.set(dataclasses.replace(current_tuning(), **knobs))
    try:
        yield current_tuning()
    finally:
        _TUNING.reset(token)


def current_tuning() -> Tuning:
    return _TUNING.get() or Tuning()


def per_platform(build: Callable[[str], Callable[..., Any]], args: Sequence[Any], interpret: bool | None) -> Any:
    """``build(kind)(*args)`` for the kind of the platform the computation is lowered for (see the module
    docstring); with ``interpret=True`` the interpreter everywhere, with False the platform's compiled kind."""
    if interpret:
        return build("interpret")(*args)
    kinds = {p: kind for p, kind in PLATFORM_KINDS.items() if not (interpret is False and kind == "interpret")}
    branches = {p: build(kind) for p, kind in kinds.items()}
    return jax.lax.platform_dependent(*args, **branches)


def chunk_length(kind: str, T: int, chunk_size: int) -> int:
    """The chunk a kernel of ``kind`` runs: ``chunk_size`` shrunk for short sequences, and a multiple of
    ``COMPILED_CHUNK_MULTIPLE`` when compiled."""
    return effective_chunk(T, chunk_size, multiple=1 if kind == "interpret" else COMPILED_CHUNK_MULTIPLE)


def feature_dim(kind: str, D: int) -> int:
    """The head dim a kernel of ``kind`` runs at: Triton's blocks need power-of-two sizes and its dots at
    least 16, so the Triton kernels see heads zero-padded to that (exact for these ops: a zero key or query
    component neither writes nor reads, a zero value column stays zero); the others run at D."""
    if kind != "triton":
        return D
    return max(16, 1 << (D - 1).bit_length())


def pad_features(x: jax.Array | None, D: int, axis: int = -1) -> jax.Array | None:
    """Zero-pad ``axis`` of ``x`` to size ``D``."""
    if x is None or x.shape[axis] == D:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, D - x.shape[axis])
    return jnp.pad(x, widths)


@dataclasses.dataclass(frozen=True)
class Launch:
    """How one backend call's kernels lower: the kind and the knobs, fixed when the call is traced (so that a
    backward pass traced later launches the same way). Static (hashable)."""

    kind: str
    block_v: int
    num_warps: int
    num_stages: int
    sequential: str


def check_tuning(V: int) -> None:
    """Raise if the current :func:`tuning` cannot apply to a call with value dim ``V``. Checked before the
    per-platform branches are traced, since every branch is traced whatever the platform."""
    bv = current_tuning().block_v
    if bv is not None and (bv < 1 or bv & (bv - 1) or V % bv):
        raise ValueError(f"tuning block_v is {bv}, expected a power of two that divides the value dim V = {V}")


def launch(kind: str, V: int) -> Launch:
    """The :class:`Launch` of a call of ``kind`` with (padded) value dim ``V`` under the current :func:`tuning`.
    The value tile is the knob (on TPU only where Mosaic can tile that way: all of V or a multiple of 128 lanes),
    else all of V on TPU up to 128 lanes, else 64, which gives a GPU B * H * V / 64 programs in the sequential
    passes."""
    t = current_tuning()
    bv = t.block_v
    sequential = {"triton": "loop", "mosaic": "grid"}.get(kind, t.sequential or "grid")
    if kind == "mosaic" and bv is not None and bv != V and bv % 128:
        bv = None
    if bv is None:
        bv = (128 if V % 128 == 0 else V) if kind == "mosaic" else min(V, 64)
    return Launch(kind, bv, t.num_warps, t.num_stages, sequential)


def kernel_dims(kind: str, T: int, K: int, V: int, chunk_size: int) -> tuple[int, int, int, Launch]:
    """(chunk, K and V as the kernels of ``kind`` see them, launch) of a call on a [T, K] / [T, V] sequence."""
    Kp, Vp = feature_dim(kind, K), feature_dim(kind, V)
    return chunk_length(kind, T, chunk_size), Kp, Vp, launch(kind, Vp)


# ----------------------------------------------------------------------------------------------------------
# Layout.


def head_major(x: jax.Array | None) -> jax.Array | None:
    """[B, T, H, D] -> [B, H, T, D]; per-token scalars [B, T, H] -> columns [B, H, T, 1]."""
    if x is None:
        return None
    if x.ndim == 3:
        return jnp.swapaxes(x, 1, 2)[..., None]
    return jnp.swapaxes(x, 1, 2)


def to_kernel(x: jax.Array | None, D: int | None = None) -> jax.Array | None:
    """``x`` head-major, its last dim zero-padded to ``D`` (None: as it is)."""
    return head_major(x if D is None else pad_features(x, D))


def time_major(x: jax.Array) -> jax.Array:
    """[B, H, T, D] -> [B, T, H, D], the inverse of :func:`head_major` for per-token tensors."""
    return jnp.swapaxes(x, 1, 2)


# ----------------------------------------------------------------------------------------------------------
# BlockSpecs of the chunk-parallel kernels: one chunk of a (b, h, n[, j]) grid, j the value tile.


def chunk_rows(C: int, D: int, tiled: bool = False) -> pl.BlockSpec:
    """Rows of chunk n of a [B, H, T, D] array; ``tiled``: columns of value tile j (grid (b, h, n, j))."""
    if tiled:
        return pl.BlockSpec((None, None, C, D), lambda b, h, n, j: (b, h, n, j))
    return pl.BlockSpec((None, None, C, D), lambda b, h, n, *_: (b, h, n, 0))


def chunk_state(K: int, V: int, tiled: bool = False) -> pl.BlockSpec:
    """State of chunk n of a [B, H, N, K, V] stack; ``tiled``: value tile j."""
    if tiled:
        return pl.BlockSpec((None, None, None, K, V), lambda b, h, n, j: (b, h, n, 0, j))
    return pl.BlockSpec((None, None, None, K, V), lambda b, h, n, *_: (b, h, n, 0, 0))


# ----------------------------------------------------------------------------------------------------------
# Loading and storing chunks inside a kernel.


def column(x: jax.Array) -> jax.Array:
    """[C, 1] column block -> [C] vector (the per-chunk math is written with vectors)."""
    return x[:, 0]


def as_column(x: jax.Array) -> jax.Array:
    return x[:, None]


def _compiler_params(how: Launch, grid: tuple[int, ...], sequential_last: bool) -> Any:
    if how.kind == "triton":
        from jax.experimental.pallas import triton as plgpu

        return plgpu.CompilerParams(num_warps=how.num_warps, num_stages=how.num_stages)
    if how.kind == "mosaic":
        from jax.experimental.pallas import tpu as pltpu

        last = "arbitrary" if sequential_last else "parallel"
        return pltpu.CompilerParams(dimension_semantics=("parallel",) * (len(grid) - 1) + (last,))
    return None


def call(
    kernel: Callable[..., None],
    ins: Sequence[Any],
    in_specs: Sequence[Any],
    outs: Sequence[tuple[tuple[int, ...], Any]],
    out_specs: Sequence[Any],
    *,
    grid: tuple[int, ...],
    how: Launch,
    name: str,
    scratch: Sequence[tuple[tuple[int, ...], Any]] = (),
    sequential_last: bool = False,
) -> list[jax.Array]:
    """Run ``kernel`` over ``grid`` on ``ins`` (cast to one shard_map variance), launched as ``how`` says, with
    outputs given as (shape, dtype) pairs that vary like the inputs, and ``scratch`` buffers (shape, dtype) that
    persist across grid steps. Every grid axis is parallel but, with ``sequential_last``, the last, whose steps
    run in order."""
    ins = [match_vma(x, *ins) for x in ins]
    out_shape = [out_struct(shape, dtype, ins[0]) for shape, dtype in outs]
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=list(in_specs),
        out_specs=list(out_specs),
        interpret=how.kind == "interpret",
        compiler_params=_compiler_params(how, grid, sequential_last),
        scratch_shapes=[_vmem(shape, dtype) for shape, dtype in scratch],
        name=name,
    )(*ins)


def _vmem(shape: tuple[int, ...], dtype: Any) -> Any:
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.VMEM(shape, dtype)


# ----------------------------------------------------------------------------------------------------------
# The sequential passes: a pure per-chunk step driven over the chunks, in a kernel loop or by the grid.


@dataclasses.dataclass(frozen=True)
class Rows:
    """A per-token operand [B, H, T, D] seen one chunk of rows at a time (``tiled``: one value tile of D)."""

    D: int
    tiled: bool = False


@dataclasses.dataclass(frozen=True)
class Stack:
    """A per-chunk operand [B, H, N, R, D] (one [R, D] block per chunk; ``tiled``: one value tile of D)."""

    R: int
    D: int
    tiled: bool = False


def _width(D: int, tiled: bool, BV: int) -> int:
    return BV if tiled else D


def _loop_spec(op: Rows | Stack, Tp: int, N: int, BV: int) -> pl.BlockSpec:
    """Whole-sequence block of grid (b, h, j)."""
    W = _width(op.D, op.tiled, BV)
    if isinstance(op, Rows):
        return pl.BlockSpec((None, None, Tp, W), lambda b, h, j: (b, h, 0, j if op.tiled else 0))
    return pl.BlockSpec((None, None, N, op.R, W), lambda b, h, j: (b, h, 0, 0, j if op.tiled else 0))


def _grid_spec(op: Rows | Stack, C: int, chunk: Callable[[Any], Any], BV: int) -> pl.BlockSpec:
    """One chunk's block of grid (b, h, j, n), chunk(n) the chunk the n-th step visits."""
    W = _width(op.D, op.tiled, BV)
    if isinstance(op, Rows):
        return pl.BlockSpec((None, None, C, W), lambda b, h, j, n: (b, h, chunk(n), j if op.tiled else 0))
    return pl.BlockSpec((None, None, None, op.R, W), lambda b, h, j, n: (b, h, chunk(n), 0, j if op.tiled else 0))


def _carry_spec(shape: tuple[int, ...], tiled: bool, BV: int, grid_rank: int) -> pl.BlockSpec:
    """A carried value [B, H, R, D] (value tile j of D if ``tiled``), the same block at every chunk."""
    R, D = shape[-2:]
    block = (None, None, R, BV if tiled else D)
    if grid_rank == 3:
        return pl.BlockSpec(block, lambda b, h, j: (b, h, 0, j if tiled else 0))
    return pl.BlockSpec(block, lambda b, h, j, n: (b, h, 0, j if tiled else 0))


def _load(ref: Any, op: Rows | Stack, n: Any, C: int) -> jax.Array:
    """Chunk ``n`` of a whole-sequence block."""
    return ref[pl.ds(n * C, C), :] if isinstance(op, Rows) else ref[n]


def _store(ref: Any, op: Rows | Stack, n: Any, C: int, x: jax.Array) -> None:
    if isinstance(op, Rows):
        ref[pl.ds(n * C, C), :] = x.astype(ref.dtype)
    else:
        ref[n] = x.astype(ref.dtype)


def sequential(
    step: Callable[[list[jax.Array], tuple[jax.Array, ...]], tuple[tuple[jax.Array, ...], list[jax.Array]]],
    ins: Sequence[tuple[Any, Rows | Stack]],
    init: Sequence[Any],
    outs: Sequence[tuple[tuple[int, ...], Any, Rows | Stack]],
    *,
    C: int,
    tiled_carry: bool,
    reverse: bool,
    how: Launch,
    name: str,
) -> list[jax.Array]:
    """One pass over the chunks in order (``reverse``: from the last), carrying values from chunk to chunk.

    ``step(chunk_inputs, carry) -> (carry, chunk_outputs)`` is the per-chunk work, pure: it gets the chunk's
    block of every input of ``ins`` (array, Rows | Stack) and the carry, and returns the next carry and the
    chunk's block of every output of ``outs`` ((shape, dtype, Rows | Stack)). The carry starts from ``init``
    (arrays [B, H, R, D], value-tiled with ``tiled_carry``) and comes back, in ``init``'s order and float32 or
    float64, after the outputs. Where the time axis is sequential (``how.sequential``): "grid" drives the chunks
    as the last grid axis with the carry in VMEM scratch (TPU, per-chunk blocks, pipelined DMA); "loop" runs
    them in the kernel, over whole-sequence blocks (GPU: programs on a grid run concurrently). Both grids are
    (batch, head, value tile), so a pass has B * H * V / BV programs."""
    arrays = [x for x, _ in ins]
    B, H, Tp = arrays[0].shape[:3]
    N, BV = Tp // C, how.block_v
    tiles = init[0].shape[-1] // BV if tiled_carry else 1
    acc = [jnp.promote_types(x.dtype, jnp.float32) for x in init]
    carry_shapes = [x.shape for x in init]
    finals = [(shape, dt) for shape, dt in zip(carry_shapes, acc, strict=True)]
    n_in, n_c, n_out = len(ins), len(init), len(outs)
    order = (lambda i: N - 1 - i) if reverse else (lambda i: i)
    block = lambda shape: (shape[-2], BV if tiled_carry else shape[-1])

    if how.sequential == "loop":
        grid = (B, H, tiles)
        in_specs = [_loop_spec(op, Tp, N, BV) for _, op in ins]
        out_specs = [_loop_spec(op, Tp, N, BV) for *_, op in outs]

        def kernel(*refs):
            in_refs, init_refs = refs[:n_in], refs[n_in : n_in + n_c]
            out_refs, final_refs = refs[n_in + n_c : n_in + n_c + n_out], refs[n_in + n_c + n_out :]

            def body(i, carry):
                n = order(i)
                new, chunk_outs = step([_load(r, op, n, C) for r, (_, op) in zip(in_refs, ins, strict=True)], carry)
                for r, (*_, op), x in zip(out_refs, outs, chunk_outs, strict=True):
                    _store(r, op, n, C, x)
                return tuple(new)

            start = tuple(r[...].astype(a) for r, a in zip(init_refs, acc, strict=True))
            for r, x in zip(final_refs, lax.fori_loop(0, N, body, start), strict=True):
                r[...] = x.astype(r.dtype)

        scratch = ()
    else:
        grid = (B, H, tiles, N)
        in_specs = [_grid_spec(op, C, order, BV) for _, op in ins]
        out_specs = [_grid_spec(op, C, order, BV) for *_, op in outs]
        scratch = [(block(shape), a) for shape, a in zip(carry_shapes, acc, strict=True)]

        def kernel(*refs):
            in_refs, init_refs = refs[:n_in], refs[n_in : n_in + n_c]
            out_refs = refs[n_in + n_c : n_in + n_c + n_out]
            final_refs, carry_refs = refs[n_in + n_c + n_out : -n_c], refs[-n_c:]
            i = pl.program_id(3)

            @pl.when(i == 0)
            def _():
                for c, r in zip(carry_refs, init_refs, strict=True):
                    c[...] = r[...].astype(c.dtype)

            new, chunk_outs = step([r[...] for r in in_refs], tuple(c[...] for c in carry_refs))
            for r, x in zip(out_refs, chunk_outs, strict=True):
                r[...] = x.astype(r.dtype)
            for c, x in zip(carry_refs, new, strict=True):
                c[...] = x

            @pl.when(i == N - 1)
            def _():
                for r, x in zip(final_refs, new, strict=True):
                    r[...] = x.astype(r.dtype)

    carry_specs = [_carry_spec(shape, tiled_carry, BV, len(grid)) for shape in carry_shapes]
    return call(
        kernel,
        arrays + list(init),
        in_specs + carry_specs,
        [(shape, dt) for shape, dt, _ in outs] + finals,
        out_specs + carry_specs,
        grid=grid,
        how=how,
        name=name,
        scratch=scratch,
        sequential_last=how.sequential == "grid",
    )
