"""Argument validation shared by every op of :mod:`pallas_kernels`.

Every public op validates its inputs here before dispatching, so that a wrong shape or dtype raises a
``ValueError`` that names the argument, the shape it has and the shape it should have, instead of an opaque
error from deep inside a kernel.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

# Input dtypes the kernels accept for q, k, v. float64 is accepted so that tests can compare against the
# reference at x64 precision; state and accumulation are float32 otherwise.
INPUT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64)
BACKENDS = ("auto", "reference", "chunked", "pallas")


def acc_dtype(dtype: Any) -> np.dtype:
    """Accumulation / state dtype for inputs of ``dtype``: float64 stays float64, everything else float32."""
    return np.dtype(jnp.float64) if np.dtype(dtype) == np.dtype(jnp.float64) else np.dtype(jnp.float32)


def check_shape(name: str, x: Any, names: tuple[str, ...], sizes: tuple[int | None, ...]) -> None:
    """Raise if ``x`` does not have len(names) dims whose sizes match ``sizes`` (None = any size)."""
    shape = tuple(np.shape(x))
    ok = len(shape) == len(sizes) and all(s is None or s == d for s, d in zip(sizes, shape, strict=True))
    if not ok:
        shown = "(" + ", ".join("?" if s is None else str(s) for s in sizes) + ")"
        raise ValueError(f"{name} has shape {shape}, expected ({', '.join(names)}) = {shown}")


def check_float(name: str, x: Any, allowed: tuple[Any, ...] = INPUT_DTYPES) -> None:
    dt = np.dtype(jnp.result_type(x))
    if dt not in [np.dtype(a) for a in allowed]:
        raise ValueError(
            f"{name} has dtype {dt} (shape {tuple(np.shape(x))}), expected one of {[np.dtype(a).name for a in allowed]}"
        )


def check_same_dtype(name: str, x: Any, ref_name: str, ref: Any) -> None:
    if jnp.result_type(x) != jnp.result_type(ref):
        raise ValueError(
            f"{name} has dtype {jnp.result_type(x)} (shape {tuple(np.shape(x))}), expected "
            f"{jnp.result_type(ref)} like {ref_name}"
        )


def check_int(name: str, x: Any) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
        raise ValueError(
            f"{name} has dtype {jnp.result_type(x)} (shape {tuple(np.shape(x))}), expected an integer dtype"
        )


def check_qkv(q: Any, k: Any, v: Any) -> tuple[int, int, int, int, int]:
    """Validate q, k [B, T, H, K] and v [B, T, H, V]; return (B, T, H, K, V)."""
    if np.ndim(q) != 4:
        raise ValueError(f"q has shape {tuple(np.shape(q))}, expected (B, T, H, K) with 4 dims")
    B, T, H, K = (int(s) for s in np.shape(q))
    if T < 1:
        raise ValueError(f"q has shape {tuple(np.shape(q))}, expected T >= 1 tokens")
    check_float("q", q)
    check_shape("k", k, ("B", "T", "H", "K"), (B, T, H, K))
    check_same_dtype("k", k, "q", q)
    if np.ndim(v) != 4:
        raise ValueError(f"v has shape {tuple(np.shape(v))}, expected (B, T, H, V) = ({B}, {T}, {H}, ?)")
    check_shape("v", v, ("B", "T", "H", "V"), (B, T, H, None))
    check_same_dtype("v", v, "q", q)
    return B, T, H, K, int(np.shape(v)[3])


def check_state(name: str, x: Any, names: tuple[str, ...], sizes: tuple[int, ...], q: Any) -> None:
    """A state tensor: exactly ``sizes`` and the accumulation dtype of q's dtype."""
    check_shape(name, x, names, sizes)
    want = acc_dtype(jnp.result_type(q))
    if np.dtype(jnp.result_type(x)) != want:
        raise ValueError(f"{name} has dtype {jnp.result_type(x)} (shape {tuple(np.shape(x))}), expected {want.name}")


def check_options(segment_ids: Any, chunk_size: Any, backend: Any, B: int, T: int) -> None:
    """segment_ids [B, T] ints or None, a positive int chunk_size and a known backend name."""
    if segment_ids is not None:
        check_shape("segment_ids", segment_ids, ("B", "T"), (B, T))
        check_int("segment_ids", segment_ids)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size is {chunk_size!r}, expected a positive int")
    if backend not in BACKENDS:
        raise ValueError(f"backend is {backend!r}, expected one of {BACKENDS}")


def check_common(
    q: Any,
    k: Any,
    v: Any,
    beta: Any,
    g: Any,
    initial_state: Any,
    segment_ids: Any,
    chunk_size: Any,
    backend: Any,
    scale: Any,
) -> tuple[int, int, int, int, int]:
    """Validate everything the delta-rule family shares. ``beta`` may be None (Hebbian ops)."""
    B, T, H, K, V = check_qkv(q, k, v)
    if beta is not None:
        check_shape("beta", beta, ("B", "T", "H"), (B, T, H))
        check_float("beta", beta)
    if g is not None:
        check_shape("g", g, ("B", "T", "H"), (B, T, H))
        check_float("g", g)
    if initial_state is not None:
        check_state("initial_state", initial_state, ("B", "H", "K", "V"), (B, H, K, V), q)
    check_options(segment_ids, chunk_size, backend, B, T)
    if scale is not None and not isinstance(scale, (int, float, np.floating, np.integer)):
        raise ValueError(f"scale is {type(scale).__name__}, expected a Python float (static) or None")
    return B, T, H, K, V


def check_mlstm(
    q: Any,
    k: Any,
    v: Any,
    i: Any,
    f: Any,
    initial_state: Any,
    segment_ids: Any,
    chunk_size: Any,
    backend: Any,
    eps: Any,
) -> tuple[int, int, int, int, int]:
    """Validate the arguments of :func:`pallas_kernels.mlstm`."""
    B, T, H, K, V = check_qkv(q, k, v)
    for name, gate in (("i", i), ("f", f)):
        check_shape(name, gate, ("B", "T", "H"), (B, T, H))
        check_float(name, gate)
    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 3:
            raise ValueError(
                f"initial_state is {type(initial_state).__name__}, expected a tuple (C, n, m) of "
                f"shapes ({B}, {H}, {K}, {V}), ({B}, {H}, {K}), ({B}, {H})"
            )
        for name, x, names in zip(
            ("C", "n", "m"), initial_state, (("B", "H", "K", "V"), ("B", "H", "K"), ("B", "H")), strict=True
        ):
            check_state(f"initial_state {name}", x, names, (B, H, K, V)[: len(names)], q)
    check_options(segment_ids, chunk_size, backend, B, T)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not eps >= 0:
        raise ValueError(f"eps is {eps!r}, expected a non-negative Python float (static)")
    return B, T, H, K, V
