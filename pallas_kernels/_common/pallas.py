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

**Grids.** The chunk-parallel kernels use (batch, head, chunk[, value tile]) grids whose blocks are one chunk;
the sequential state passes use (batch, head, value tile) grids whose blocks hold a whole sequence, walked
chunk by chunk in the kernel.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from .chunking import effective_chunk
from .vma import match_vma, out_struct

KINDS = ("interpret", "triton", "mosaic")
PLATFORM_KINDS = {"cpu": "interpret", "cuda": "triton", "rocm": "triton", "tpu": "mosaic"}
# Row multiple of a compiled chunk: tensor-core dots want 16 rows (Triton), Mosaic tiles rows by 8 (16 for bf16).
COMPILED_CHUNK_MULTIPLE = 16


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Knobs of the compiled kernels, read when a function is traced (a jitted function keeps the values it
    was traced with). ``block_v``: value-dimension tile of the state passes (None: the platform's default);
    ``num_warps``/``num_stages``: Triton's launch parameters."""

    block_v: int | None = None
    num_warps: int = 4
    num_stages: int = 1


_TUNING: contextvars.ContextVar[Tuning | None] = contextvars.ContextVar("pallas_kernels_tuning", default=None)


@contextlib.contextmanager
def tuning(**knobs: Any) -> Iterator[Tuning]:
    """Set kernel knobs (see :class:`Tuning`) for the functions traced inside the block."""
    allowed = {f.name for f in dataclasses.fields(Tuning)}
    unknown = sorted(set(knobs) - allowed)
    if unknown:
        raise ValueError(f"unknown tuning knobs {unknown}, expected some of {sorted(allowed)}")
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
    if kind == "mosaic" and bv is not None and bv != V and bv % 128:
        bv = None
    if bv is None:
        bv = (128 if V % 128 == 0 else V) if kind == "mosaic" else min(V, 64)
    return Launch(kind, bv, t.num_warps, t.num_stages)


# ----------------------------------------------------------------------------------------------------------
# Layout.


def head_major(x: jax.Array | None) -> jax.Array | None:
    """[B, T, H, D] -> [B, H, T, D]; per-token scalars [B, T, H] -> columns [B, H, T, 1]."""
    if x is None:
        return None
    if x.ndim == 3:
        return jnp.swapaxes(x, 1, 2)[..., None]
    return jnp.swapaxes(x, 1, 2)


def time_major(x: jax.Array, like: jax.Array) -> jax.Array:
    """Inverse of :func:`head_major`, back to the rank of ``like``."""
    if like.ndim == 3:
        x = x[..., 0]
    return jnp.swapaxes(x, 1, 2)


# ----------------------------------------------------------------------------------------------------------
# BlockSpecs. ``chunk_*`` blocks hold one chunk of a (b, h, n, ...) grid; ``seq_*`` blocks a whole sequence of
# a (b, h, j) grid whose j tiles the value dim; ``state*`` blocks the [K, V] states.


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


def seq_rows(Tp: int, D: int, tiled: bool = False) -> pl.BlockSpec:
    """A whole [T, D] sequence of a [B, H, T, D] array for grid (b, h, j); ``tiled``: value tile j."""
    if tiled:
        return pl.BlockSpec((None, None, Tp, D), lambda b, h, j: (b, h, 0, j))
    return pl.BlockSpec((None, None, Tp, D), lambda b, h, j: (b, h, 0, 0))


def seq_states(N: int, K: int, BV: int) -> pl.BlockSpec:
    """Value tile j of every chunk's state, [B, H, N, K, V], for grid (b, h, j)."""
    return pl.BlockSpec((None, None, N, K, BV), lambda b, h, j: (b, h, 0, 0, j))


def state_tile(K: int, BV: int) -> pl.BlockSpec:
    """Value tile j of a [B, H, K, V] state for grid (b, h, j)."""
    return pl.BlockSpec((None, None, K, BV), lambda b, h, j: (b, h, 0, j))


# ----------------------------------------------------------------------------------------------------------
# Loading and storing chunks inside a kernel.


def column(x: jax.Array) -> jax.Array:
    """[C, 1] column block -> [C] vector (the per-chunk math is written with vectors)."""
    return x[:, 0]


def as_column(x: jax.Array) -> jax.Array:
    return x[:, None]


def rows(ref: Any, n: Any, C: int) -> jax.Array:
    """Rows of chunk ``n`` of a whole-sequence block."""
    return ref[pl.ds(n * C, C), :]


def store_rows(ref: Any, n: Any, C: int, x: jax.Array) -> None:
    ref[pl.ds(n * C, C), :] = x.astype(ref.dtype)


def _compiler_params(how: Launch, grid: tuple[int, ...]) -> Any:
    if how.kind == "triton":
        from jax.experimental.pallas import triton as plgpu

        return plgpu.CompilerParams(num_warps=how.num_warps, num_stages=how.num_stages)
    if how.kind == "mosaic":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel",) * len(grid))
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
) -> list[jax.Array]:
    """Run ``kernel`` over ``grid`` on ``ins`` (cast to one shard_map variance), launched as ``how`` says, with
    outputs given as (shape, dtype) pairs that vary like the inputs. Every grid axis is parallel: the
    sequential passes loop over chunks inside the kernel."""
    ins = [match_vma(x, *ins) for x in ins]
    out_shape = [out_struct(shape, dtype, ins[0]) for shape, dtype in outs]
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=list(in_specs),
        out_specs=list(out_specs),
        interpret=how.kind == "interpret",
        compiler_params=_compiler_params(how, grid),
        name=name,
    )(*ins)
