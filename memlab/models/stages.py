"""Compute accounting by stage, so that training part of a model is counted honestly.

A model lists its forward pass as stages (`flop_stages(shapes)`): each with its forward FLOPs per example, the
parameter sub-trees it uses and the stages whose outputs it reads. Training a stage costs its forward, plus an
activation backward where a gradient flows through it (it or a stage it reads from, transitively, has trainable
parameters), plus the weight gradients: its forward times the trainable share of its parameters (a matmul's
weight gradient costs what its forward does). Everything trainable gives the usual 3x forward; a frozen stage
that a gradient passes through costs 2x; a frozen stage with nothing trainable before it, 1x.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from memlab.models.params import under


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    flops: float  # forward FLOPs per example
    params: tuple[str, ...] = ()  # parameter sub-trees (prefixes) the stage uses
    reads: tuple[str, ...] = ()  # stages whose outputs it takes in: gradients flow back along these


def chain(stages: Iterable[Stage]) -> list[Stage]:
    """Stages that each read the one before (a residual stack), unless they name what they read."""
    out = []
    for stage in stages:
        if not stage.reads and out:
            stage = dataclasses.replace(stage, reads=(out[-1].name,))
        out.append(stage)
    return out


class StagedFlops:
    """Mixin: the forward FLOPs of an example are the sum of the model's stages."""

    def forward_flops_per_example(self, shapes: dict) -> float:
        return sum(stage.flops for stage in self.flop_stages(shapes))


def training_flops(stages: list[Stage], sizes: dict[str, int], trainable: set[str] | None = None) -> float:
    """Training FLOPs per example of `stages` when only the parameters named in `trainable` train (None: all).

    `sizes` maps every parameter path to its number of elements. A stage reading one not listed before it, or a
    parameter no stage claims, is a ValueError: the count would silently leave it out."""
    claimed = {name for name in sizes if any(under(name, p) for s in stages for p in s.params)}
    if claimed != set(sizes):
        raise ValueError(f"parameters in no FLOP stage: {sorted(set(sizes) - claimed)[:8]}")
    flows: dict[str, bool] = {}
    total = 0.0
    for stage in stages:
        missing = [r for r in stage.reads if r not in flows]
        if missing:
            raise ValueError(f"FLOP stage {stage.name!r} reads {missing}, which come after it or do not exist")
        mine = [n for n in sizes if any(under(n, p) for p in stage.params)]
        size = sum(sizes[n] for n in mine)
        trained = size if trainable is None else sum(sizes[n] for n in mine if n in trainable)
        share = trained / size if size else 0.0
        flows[stage.name] = share > 0 or any(flows[r] for r in stage.reads)
        backward = (1.0 + (share if size else 1.0)) if flows[stage.name] else 0.0
        total += stage.flops * (1.0 + backward)
    return total
