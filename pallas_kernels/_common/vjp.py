"""The one ``jax.custom_vjp`` construction of the package, used by the chunked and the Pallas backend of every
op.

All of them differentiate the same way: the forward keeps nothing but its own inputs, and the backward
recomputes from them what it needs (the per-chunk incoming states), then walks the chunks in reverse with
hand-derived cotangents. Only the forward and the backward function differ between backends; this module
supplies the rest: static (non-array) arguments, inputs that are None (no beta for the Hebbian rule),
integer inputs (no cotangent), and the shard_map variance of every cotangent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from .vma import varying_axes


def cotangents_like(cts: Any, primals: Any) -> Any:
    """Give each cotangent the variance of its primal, as a custom_vjp backward rule must.

    ``cts`` and ``primals`` are pytrees of one structure, where a cotangent may be None (an integer or None
    primal). A primal that is the same on every device of an axis (say a zero initial state) while its
    cotangent varies over that axis gets the sum over the axis: the transpose of the implicit broadcast that
    made it vary.
    """

    def one(ct, primal):
        if ct is None or primal is None:
            return ct
        extra = tuple(sorted(varying_axes(ct) - varying_axes(primal)))
        return jax.lax.psum(ct, extra) if extra else ct

    return jax.tree.map(one, cts, primals, is_leaf=lambda x: x is None)


def recompute_vjp(forward: Callable[..., Any], backward: Callable[..., Any]) -> Callable[..., Any]:
    """Build ``f(*arrays, **static)``, equal to ``forward(*arrays, **static)`` and differentiable in ``arrays``
    by ``backward(arrays, cts, **static)``.

    ``arrays`` are pytrees of arrays, or None; ``static`` are hashable Python values (chunk length, scale,
    flags), never differentiated. The residuals are ``arrays`` themselves: ``backward`` gets them and the
    cotangent ``cts`` of the outputs, and returns one cotangent per entry of ``arrays`` with its structure
    (None for a None or integer input).
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def core(static, *arrays):
        return forward(*arrays, **dict(static))

    def core_fwd(static, *arrays):
        return forward(*arrays, **dict(static)), arrays

    def core_bwd(static, arrays, cts):
        return cotangents_like(tuple(backward(arrays, cts, **dict(static))), arrays)

    core.defvjp(core_fwd, core_bwd)

    @functools.wraps(forward)
    def call(*arrays: Any, **static: Any) -> Any:
        return core(tuple(sorted(static.items())), *arrays)

    return call
