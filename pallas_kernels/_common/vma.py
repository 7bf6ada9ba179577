"""shard_map support: make loop carries (and kernel operands) vary over the same mesh axes as the data.

Under ``jax.shard_map`` every value carries the set of mesh axes it varies over; a ``lax.scan`` carry must
keep that set across iterations. A zero initial state (or a cotangent of a constant) is invariant while the
state after one step varies with the data, so such initial values are cast to "varying" first. Outside
shard_map the sets are empty and this is a no-op.
"""

from __future__ import annotations

from typing import Any

import jax


def varying_axes(x: Any) -> frozenset:
    """The mesh axes ``x`` varies over (empty outside shard_map)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)  # jax >= 0.9
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))  # older jax


def match_vma(x: Any, *likes: Any) -> Any:
    """Return ``x`` cast to vary over every mesh axis any of ``likes`` varies over."""
    if x is None:
        return None
    want = frozenset().union(*(varying_axes(y) for y in likes if y is not None))
    missing = tuple(sorted(want - varying_axes(x)))
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def out_struct(shape: tuple[int, ...], dtype: Any, like: Any) -> jax.ShapeDtypeStruct:
    """ShapeDtypeStruct for a pallas_call output that varies like ``like`` (required under shard_map)."""
    mat = getattr(jax.typeof(like), "manual_axis_type", None)
    if mat is not None and mat.varying:
        return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=mat)
    return jax.ShapeDtypeStruct(shape, dtype)
