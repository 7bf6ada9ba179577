"""Training FLOPs per token, analytic and as XLA counts them.

Analytic: 3x the forward pass when everything trains (backward = 2x forward, the convention of Kaplan et al. and
Hoffmann et al.); a frozen stage costs less (memlab.models.stages); every pass the objective mix runs is counted
(memlab.passes). XLA: the cost analysis of the compiled gradient computation, each loop body counted once per
iteration (XLA counts it once), recorded beside it as a check.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable

import jax
import jax.extend as jex
import ml_collections
from flax import nnx

from memlab import passes
from memlab.data.pipeline import example_shapes, tokens_per_example
from memlab.models.params import flat_params
from memlab.models.stages import training_flops
from memlab.train import curriculum
from memlab.train.run_dir import Compute

log = logging.getLogger("memlab")


def analytic_flops_per_token(
    model: nnx.Module,
    example_shapes: dict,
    tokens_per_example: int,
    trainable: frozenset[str] | None = None,
    weights: dict | None = None,
) -> float:
    """Training FLOPs per token when the `trainable` parameters train (None: all) on the passes of the objective
    mix `weights` (None: the example as it comes)."""
    sizes = {name: int(x.size) for name, x in flat_params(nnx.state(model, nnx.Param)).items()}
    names = passes.active(weights) if weights else [passes.MAIN]
    total = sum(
        training_flops(model.flop_stages(passes.view_shapes(name, example_shapes)), sizes, trainable) for name in names
    )
    return total / tokens_per_example


def run_compute(config: ml_collections.ConfigDict, model: nnx.Module, trainable: frozenset[str] | None) -> Compute:
    """The run's compute accounting: tokens per step and analytic FLOPs per token of each objective mix it trains
    on (the curriculum's over its first steps, if any)."""
    per_example = tokens_per_example(config)
    flops = {
        phase: analytic_flops_per_token(model, example_shapes(config), per_example, trainable, weights)
        for phase, weights in curriculum.mixes(config).items()
    }
    return Compute(
        config.train.batch_size * per_example,
        flops[curriculum.MAIN],
        config.train.get("curriculum_steps", 0),
        flops.get(curriculum.EARLY, 0.0),
    )


def xla_flops_per_token(
    grad_fn: Callable, params: nnx.State, batch: dict, tokens_per_example: int, accum: int = 1
) -> float | None:
    """FLOPs XLA counts for `grad_fn` (value and gradient of the loss) on one micro-batch (1/`accum` of `batch`),
    per token, each loop body counted once per iteration (see `xla_flops`); None where that count is not
    available. It compiles the unpartitioned computation from shapes alone, so the figure is the global one
    whatever mesh `params` and `batch` live on."""
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    micro = jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] // accum, *x.shape[1:]), x.dtype), batch)
    flops = xla_flops(grad_fn, params, micro)
    if flops is None:
        return None
    examples = jax.tree.leaves(micro)[0].shape[0]
    return flops / (examples * tokens_per_example)


def xla_flops(fn: Callable, *args) -> float | None:
    """XLA's FLOP count of `fn` on `args` (shapes), with every scan's body counted once per iteration.

    XLA's cost analysis counts a while loop's body once whatever its trip count, which undercounts the chunked
    kernels (a `lax.scan` over chunks) as soon as a sequence spans several chunks. So each scan of the traced
    program adds the iterations XLA misses: (length - 1) times its body's XLA count (the body compiled on its own),
    times the iterations of the loops around it; a scan unrolled k-fold adds only the copies XLA does not already
    see. The loops are then checked against the compiled program's, by trip count: XLA merges identical loops
    (common subexpressions), so a trip count found fewer times than traced scales its corrections down to the
    loops left. None, with the reason logged, if the backend reports no FLOPs, if a `while_loop` whose body does
    FLOPs runs a number of times unknown when tracing, or if a traced trip count is missing from the compiled
    program (XLA unrolled the loop, so its iterations are already counted)."""
    traced = jax.jit(fn).trace(*args)
    compiled = traced.lower().compile()
    base = _cost_flops(compiled)
    if base is None:
        log.info("flops_per_token_xla: the backend reports no FLOPs")
        return None
    try:
        terms = _LoopCorrection().of(traced.jaxpr.jaxpr)
    except _UnknownTripCount as e:
        log.info("flops_per_token_xla: not applicable, %s", e)
        return None
    traced_trips, compiled_trips = Counter(t for t, _ in terms if t), _hlo_trip_counts(compiled)
    if missing := sorted(t for t in traced_trips if not compiled_trips[t]):
        log.info("flops_per_token_xla: not applicable, XLA unrolled the loops of trip counts %s", missing)
        return None
    kept = {t: min(1.0, compiled_trips[t] / n) for t, n in traced_trips.items()}
    return base + sum(flops * kept.get(t, 1.0) for t, flops in terms)


class _UnknownTripCount(Exception):
    """A loop that does FLOPs runs a number of times the traced program does not fix."""


# One term per loop of the compiled program: its trip count (None: a correction tied to no loop) and the FLOPs
# XLA's count misses for it.
_Terms = list[tuple[int | None, float]]


class _LoopCorrection:
    """What XLA's count of a jaxpr misses in its loops, each distinct loop body compiled once."""

    def __init__(self):
        self._flops: dict[str, float] = {}

    def of(self, jaxpr: jex.core.Jaxpr) -> _Terms:
        return [term for eqn in jaxpr.eqns for term in self._of_eqn(eqn)]

    def _of_eqn(self, eqn: jex.core.JaxprEqn) -> _Terms:
        name = eqn.primitive.name
        if name == "scan":
            return self._scan(eqn.params)
        if name == "while":
            return self._while(eqn.params)
        if name == "cond":
            return self._cond(eqn.params["branches"])
        if name == "pallas_call":  # a kernel XLA sees as one custom call; its loops are not XLA's
            return []
        return [term for sub in jex.core.jaxprs_in_params(eqn.params) for term in self.of(sub)]  # jit, remat...

    def _scan(self, params: dict) -> _Terms:
        """XLA counts the loop body (`unroll` copies of the scan body) once plus the `length % unroll` copies
        left outside it; the scan runs its body `length` times, and with it every loop inside it."""
        body, length = params["jaxpr"], params["length"]
        unroll = max(1, min(params["unroll"], length))
        counted, steps = unroll + length % unroll, length // unroll
        body_terms = self.of(body.jaxpr)
        inner = [(t, flops * length / counted) for _ in range(counted) for t, flops in body_terms]
        if steps < 2:  # XLA drops a loop of one iteration (and a scan of none has nothing to add)
            return inner
        return [(steps, (length - counted) * self.flops(body)), *inner]

    def _while(self, params: dict) -> _Terms:
        if self.flops(params["body_jaxpr"]):
            raise _UnknownTripCount("a while_loop with an unknown trip count does FLOPs")
        return []

    def _cond(self, branches: tuple) -> _Terms:
        """XLA counts a conditional as its costliest branch, so the correction is the costliest branch once its
        loops are corrected, less XLA's count; the other branches' loops are still in the program."""
        parts = [self.of(branch.jaxpr) for branch in branches]
        if not any(flops for part in parts for _, flops in part):
            return [term for part in parts for term in part]
        counted = [self.flops(branch) for branch in branches]
        true = [c + sum(flops for _, flops in part) for c, part in zip(counted, parts, strict=True)]
        worst = true.index(max(true))
        others = [(t, 0.0) for i, part in enumerate(parts) if i != worst for t, _ in part]
        return [*parts[worst], (None, counted[worst] - max(counted)), *others]

    def flops(self, closed: jex.core.ClosedJaxpr) -> float:
        """XLA's count of `closed` compiled on its own (the loops inside it counted once)."""
        key = str(closed.jaxpr)
        if key not in self._flops:
            args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
            compiled = jax.jit(jex.core.jaxpr_as_fun(closed)).lower(*args).compile()
            self._flops[key] = _cost_flops(compiled) or 0.0
        return self._flops[key]


def _cost_flops(compiled: jax.stages.Compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def _hlo_trip_counts(compiled: jax.stages.Compiled) -> Counter:
    """The known trip counts of the compiled program's while loops."""
    return Counter(int(n) for n in re.findall(r'"known_trip_count":\{"n":"(\d+)"\}', compiled.as_text()))
