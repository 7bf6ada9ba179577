"""A claim's plan before any compute: every stage expanded and validated, over every value its choices could take.

A stage that reads an earlier search's choice is built once per candidate value of that search (the grid and its
possible extensions), so a config that only some choice would produce (k = 64 at paper scale, a rate past the
grid) fails here, not after the earlier stages have trained. For each stage the plan gives runs, steps, training
FLOPs and device-hours on a named accelerator at an assumed MFU; a search's figures come as expected (its grid)
and at most (every group extended to its bound).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from memlab.errors import ConfigError
from memlab.sweep import expand
from memlab.sweep.estimate import estimate
from memlab.sweep.stages import Search, Study
from memlab.train.hardware import PEAKS, peak_flops

if TYPE_CHECKING:
    from memlab.reproduce.claim import Claim


@dataclasses.dataclass
class Cost:
    runs: int = 0
    steps: int = 0
    flops: float = 0.0
    hours: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))

    def most(self, other: Cost) -> Cost:
        return Cost(*(max(a, b) for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


@dataclasses.dataclass
class StagePlan:
    stage: str
    expected: Cost
    at_most: Cost
    validated: int  # configs built and validated, over every candidate choice


@dataclasses.dataclass
class Plan:
    claim: str
    scale: str
    device: str
    mfu: float
    stages: list[StagePlan]

    @property
    def expected(self) -> Cost:
        return sum((s.expected for s in self.stages), Cost())

    @property
    def at_most(self) -> Cost:
        return sum((s.at_most for s in self.stages), Cost())


def check_device(device: str, mfu: float) -> None:
    if peak_flops(device) is None:
        raise ConfigError(f"--device={device!r} is not in the hardware table; try one of: "
                          + ", ".join(name for _, name, _ in PEAKS))  # fmt: skip
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu={mfu!r} must be in (0, 1]")


def make_plan(claim: Claim, study: Study, *, device: str = "h100", mfu: float = 0.3) -> Plan:
    """Expand and validate every stage of `study` (a ConfigError names the stage and the point); the costs."""
    check_device(device, mfu)
    stages = []
    for stage in study.stages:
        try:
            stages.append(_plan_stage(stage, study, device, mfu))
        except ConfigError as err:
            raise ConfigError(f"claim {claim.name!r} at {study.scale} scale, stage {stage.name!r}: {err}") from None
    return Plan(claim.name, study.scale, device, mfu, stages)


def _plan_stage(stage, study: Study, device: str, mfu: float) -> StagePlan:
    expected, at_most, validated = Cost(), Cost(), 0
    for planned in study.plan_passes(stage.after):
        pass_study = dataclasses.replace(study, planned=planned)
        if isinstance(stage, Search):
            grid = _costs(stage.build(pass_study, {g: list(stage.grid) for g in stage.groups}), device, mfu)
            every = _costs(stage.build(pass_study, {g: stage.candidates() for g in stage.groups}), device, mfu)
            cost = sum(grid, Cost())
            widest = max(every, key=lambda c: c.flops, default=Cost())
            extra = stage.max_extensions * len(stage.groups)
            most = cost + Cost(*(extra * x for x in dataclasses.astuple(widest)))
            validated += len(grid) + len(every)
        else:
            runs = _costs(stage.sweeps(pass_study), device, mfu)
            cost = most = sum(runs, Cost())
            validated += len(runs)
        expected, at_most = expected.most(cost), at_most.most(most)
    return StagePlan(stage.name, expected, at_most, validated)


def _costs(sweeps, device: str, mfu: float) -> list[Cost]:
    """Each point's cost: every point expanded and validated, its FLOPs estimated."""
    out = []
    for sweep in sweeps:
        for point in expand(sweep):
            flops = float(estimate(point.config)["flops"])
            peak = peak_flops(device, point.config.train.precision)
            out.append(Cost(1, int(point.config.train.steps), flops, flops / (peak * mfu) / 3600))
    return out


def print_plan(claim: Claim, plan: Plan) -> None:
    """The plan as a table, one row per stage and a total."""
    hours = f"{plan.device}-hours at MFU {plan.mfu:g}"
    print(f"memlab: plan of {plan.claim} at {plan.scale} scale (every config validated)")
    if not plan.stages:
        print("  no training runs" + (f"; evaluation: {claim.evaluation_work}" if claim.evaluation_work else ""))
        return
    print(f"  {'stage':24s} {'runs':>11s} {'steps':>17s} {'training FLOPs':>21s} {hours:>26s} {'validated':>9s}")
    for s in [*plan.stages, StagePlan("total", plan.expected, plan.at_most, sum(s.validated for s in plan.stages))]:
        cells = [
            _span(getattr(s.expected, key), getattr(s.at_most, key), spec)
            for key, spec in (("runs", "d"), ("steps", "d"), ("flops", ".3g"), ("hours", ".3g"))
        ]
        print(f"  {s.stage:24s} {cells[0]:>11s} {cells[1]:>17s} {cells[2]:>21s} {cells[3]:>26s} {s.validated:>9d}")
    if claim.evaluation_work:
        print(f"  not counted above: {claim.evaluation_work}")


def _span(low, high, spec: str) -> str:
    return f"{low:{spec}}" if low == high else f"{low:{spec}}-{high:{spec}}"
