"""Sweep definition and expansion into complete, validated, locked configs with readable run names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ml_collections

from memlab.config import ConfigError, call_file_function, load_base_config, set_value, to_dict, validate
from memlab.data.pipeline import tokens_per_example
from memlab.sweep.estimate import estimate


@dataclasses.dataclass
class Sweep:
    """What a sweep file's `get_sweep()` returns.

    name: the sweep's name (run group, default W&B group).
    experiment: path of the base experiment file (relative to the sweep file, its parent, or the working dir).
    points: the runs, as dicts of dotted config keys and `@labels` (see memlab.sweep.axes). Labels name runs and
      feed `derive`; three set the schedule: `@tokens` (a token budget) or `@flops` (a training-FLOPs budget) give
      `train.steps`, `@evals` the number of evaluations over it.
    base: overrides applied to every point before its own values.
    derive: optional function point -> extra overrides computed from it (e.g. context_len = ratio * slots).
    """

    name: str
    experiment: str
    points: list[dict]
    base: dict = dataclasses.field(default_factory=dict)
    derive: Callable[[dict], dict] | None = None
    source: Path | None = None  # set by load_sweep
    named: tuple[str, ...] = ()  # keys that name every run even where they do not vary (a search's knob)


@dataclasses.dataclass
class Point:
    """One run of a sweep, fully resolved: what `memlab train` is given and what names it."""

    name: str
    values: dict  # the point's own values (config keys and labels), before derivation
    overrides: dict  # every config key set on top of the experiment, derived ones included
    config: ml_collections.ConfigDict
    experiment: str  # resolved path of the base experiment file


def load_sweep(path: str | Path) -> Sweep:
    """Call the sweep file's `get_sweep()`; remember the file, which the experiment path is relative to."""
    sweep = call_file_function(path, "get_sweep", Sweep, "sweep")
    sweep.source = Path(path).resolve()
    return sweep


def experiment_path(sweep: Sweep) -> Path:
    """The experiment file, looked for next to the sweep file, in its parent, then in the working directory."""
    candidates = [Path(sweep.experiment)]
    if sweep.source is not None:
        candidates = [
            sweep.source.parent / sweep.experiment,
            sweep.source.parent.parent / sweep.experiment,
            *candidates,
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"sweep '{sweep.name}': experiment file {sweep.experiment!r} not found "
        f"(looked in {', '.join(str(c.parent) for c in candidates)})"
    )


def sweep_id(sweep: Sweep) -> str:
    """Stable id of a sweep definition: its name plus a hash of every point's values."""
    payload = json.dumps([sweep.base, sweep.points], sort_keys=True, default=str)
    return f"{sweep.name}-{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


def varied_keys(sweep: Sweep) -> list[str]:
    """Keys whose value differs between points (and the sweep's `named` ones), in order of first appearance: these
    name the runs."""
    keys: list[str] = []
    for p in sweep.points:
        keys.extend(k for k in p if k not in keys)
    return [k for k in keys if k in sweep.named or len({json.dumps(p.get(k), default=str) for p in sweep.points}) > 1]


def run_name(values: dict, varied: list[str]) -> str:
    """`d_model=64-ratio=4`: the point's varied values, each by its leaf key unless two leaves share a name."""
    leaves = [k.lstrip("@").rsplit(".", 1)[-1] for k in varied]
    parts = []
    for key, leaf in zip(varied, leaves, strict=True):
        if key not in values:  # an axis of another group of a chained sweep
            continue
        label = leaf if leaves.count(leaf) == 1 else key.lstrip("@")
        parts.append(f"{label}={_fmt(values.get(key))}")
    return "-".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "+".join(_fmt(v) for v in value)
    else:
        text = str(value)
    return text.replace(",", "+").replace("/", "_").replace(" ", "")


def expand(sweep: Sweep, *, launch_id: str = "") -> list[Point]:
    """Every point as a complete, validated, locked config. Unknown keys fail before anything is built."""
    experiment = experiment_path(sweep)
    varied, sid = varied_keys(sweep), sweep_id(sweep)
    out, names = [], set()
    for values in sweep.points:
        merged = {**sweep.base, **values}
        derived = sweep.derive(merged) if sweep.derive else {}
        overrides = {k: v for k, v in {**merged, **derived}.items() if not k.startswith("@")}
        config = load_base_config(experiment)
        for key, value in overrides.items():
            try:
                set_value(config, key, value)
            except ConfigError as err:
                raise ConfigError(f"sweep '{sweep.name}', axis '{key}': {err}") from None
        if "@tokens" in merged and "@flops" in merged:
            raise ConfigError(f"sweep '{sweep.name}': a point sets both @tokens and @flops; give one budget")
        if "@tokens" in merged:
            per_step = config.train.batch_size * tokens_per_example(config)
            set_value(config, "train.steps", max(1, math.ceil(merged["@tokens"] / per_step)))
            overrides["train.steps"] = config.train.steps
        if "@flops" in merged:  # a compute budget: the schedule ends where training FLOPs reach it
            set_value(config, "train.steps", estimate(config)["compute"].steps_for(merged["@flops"]))
            overrides["train.steps"] = config.train.steps
        if "@evals" in merged:  # evaluations spread over the schedule, whatever its length
            set_value(config, "train.eval_every", max(1, config.train.steps // merged["@evals"]))
            overrides["train.eval_every"] = config.train.eval_every
        name = run_name(values, varied) or sweep.name
        if name in names:
            raise ConfigError(f"sweep '{sweep.name}' has two points named {name!r}; points must differ in a varied key")
        names.add(name)
        set_value(config, "logging.sweep_id", sid)
        set_value(config, "logging.launch_id", launch_id)
        set_value(config, "logging.run_name", name)
        if "logging.group" not in overrides:  # runs of a sweep are grouped by the sweep in W&B
            set_value(config, "logging.group", sweep.name)
        try:
            validate(config)
        except ConfigError as err:
            raise ConfigError(f"sweep point {name!r}: {err}") from None
        out.append(Point(name=name, values=values, overrides=overrides, config=config, experiment=str(experiment)))
    return out


def describe(sweep: Sweep, points: list[Point], launch_id: str) -> dict:
    """What sweep.json records: ids, varied axes and their values, the runs."""
    varied = varied_keys(sweep)
    return {
        "name": sweep.name,
        "sweep_id": sweep_id(sweep),
        "launch_id": launch_id,
        "experiment": str(experiment_path(sweep)),
        "source": str(sweep.source) if sweep.source else None,
        "axes": {k: _distinct(p.values.get(k) for p in points) for k in varied},
        "runs": [p.name for p in points],
        "configs": {p.name: to_dict(p.config) for p in points},
    }


def _distinct(values: Iterable) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out
