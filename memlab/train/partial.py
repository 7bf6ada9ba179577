"""Training part of a model: which parameters train (`train.trainable`) and starting from another run's parameters
(`train.init_from`, `train.init_step`, `train.init_map`).

Both are checked against the model's parameter paths (see memlab.models.params) before any compute: a pattern
that selects nothing, an empty trainable set, a run without the checkpoint asked for, a prefix that matches no
parameter or parameters whose shapes differ are ConfigErrors naming them. The gradient is taken with respect to
the trainable parameters only, so frozen ones enter the step as constants and XLA spends no weight-gradient
matmuls on them (and no backward pass at all on what runs before the first trainable parameter).
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from memlab.errors import ConfigError
from memlab.models.params import flat_params, map_params, path_name, under
from memlab.train.checkpoint import abstract_params_of, checkpoint_step, load_model


def _top_level(names) -> str:
    return ", ".join(dict.fromkeys(n.split("/")[0] for n in names))


def trainable_names(abstract_params: nnx.State, patterns) -> frozenset[str] | None:
    """The parameter paths `patterns` select (regexes matched from the start of each path, as re.match does),
    or None when there are no patterns: everything trains."""
    if not patterns:
        return None
    names = list(flat_params(abstract_params))
    selected = set()
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"train.trainable: {pattern!r} is not a regular expression ({err})") from None
        matched = {n for n in names if regex.match(n)}
        if not matched:
            raise ConfigError(
                f"train.trainable: {pattern!r} matches no parameter path (matched from the start, e.g. "
                f"'blocks/1/' or '.*mixer/q/'); the model's parameters start with: {_top_level(names)}"
            )
        selected |= matched
    return frozenset(selected)


def split_trainable(params: nnx.State, names: frozenset[str] | None) -> tuple[nnx.State, nnx.State]:
    """(trainable, frozen) parts of a parameter state; `nnx.merge_state` puts them back together."""
    chosen = (lambda path, value: True) if names is None else (lambda path, value: path_name(path) in names)
    return nnx.split_state(params, chosen, ...)


def parse_init_map(pairs) -> list[tuple[str, str]]:
    """`("encoder->encoder", "blocks/0->blocks/2")` -> [(old prefix, new prefix)]; () maps every path to itself."""
    out = []
    for pair in pairs:
        old, sep, new = (part.strip().strip("/") for part in str(pair).partition("->"))
        if not sep or not old or not new:
            raise ConfigError(
                f"train.init_map: {pair!r} is not of the form 'old/prefix->new/prefix' (parameter-path prefixes of "
                "the source run and of this model)"
            )
        out.append((old, new))
    return out


def _sources(new_names, old_names, pairs) -> dict[str, str]:
    """{new path: old path} the map copies; every prefix must match on both sides."""
    if not pairs:
        return {n: n for n in new_names}
    sources = {}
    for old, new in pairs:
        mine = [n for n in new_names if under(n, new)]
        if not mine:
            raise ConfigError(
                f"train.init_map: {new!r} matches no parameter of this model; its parameters start with: "
                f"{_top_level(new_names)}"
            )
        if not any(under(n, old) for n in old_names):
            raise ConfigError(
                f"train.init_map: {old!r} matches no parameter of the source run; its parameters start with: "
                f"{_top_level(old_names)}"
            )
        sources.update({n: old + n[len(new) :] for n in mine})
    return sources


class InitFrom:
    """The plan of `train.init_from`, checked on shapes alone: `load(params)` then fills the parameters in.

    Every parameter of this model is taken from the source run (through `train.init_map`, if given), except new
    trainable ones the source lacks (adapters, heads added to a backbone when `train.trainable` is given): those
    start fresh (`fresh`), and `init_fresh_from_backbone` may derive them from the loaded ones. A parameter the
    source lacks that would be frozen (or, with no `train.trainable`, any) is a ConfigError: it would never leave
    its random start, or the map is wrong.
    """

    def __init__(self, train: ml_collections.ConfigDict, abstract_params: nnx.State, trainable=None):
        self.run_dir = Path(train.init_from)
        self.step = checkpoint_step(self.run_dir, None if train.init_step < 0 else train.init_step)
        new, old = flat_params(abstract_params), flat_params(abstract_params_of(self.run_dir))
        sources = _sources(list(new), list(old), parse_init_map(train.init_map))
        absent = {n for n, o in sources.items() if o not in old}
        self.fresh = frozenset(absent & trainable) if trainable is not None else frozenset()
        missing = sorted(absent - self.fresh)
        if missing:
            raise ConfigError(
                f"train.init_from={str(self.run_dir)!r} has no parameter(s) {missing[:8]} for this model "
                "(map prefixes with train.init_map='old->new', start those parameters fresh by mapping only "
                "the sub-trees you want, or make them trainable with train.trainable)"
            )
        self.sources = {n: o for n, o in sources.items() if n not in self.fresh}
        shapes = {n: (new[n].shape, old[o].shape) for n, o in self.sources.items()}
        mismatched = [f"{n} {a} <- {b}" for n, (a, b) in shapes.items() if a != b]
        if mismatched:
            raise ConfigError(f"train.init_from: parameter shapes differ: {'; '.join(mismatched[:8])}")

    def load(self, params: nnx.State) -> nnx.State:
        """`params` with every mapped parameter replaced by the source run's, in the target's sharding and dtype."""
        model, _, _ = load_model(self.run_dir, self.step)
        old = flat_params(nnx.state(model, nnx.Param))

        def take(name, value):
            if name not in self.sources:
                return value
            host = np.asarray(old[self.sources[name]], value.dtype)  # every process holds it: any mesh, any host
            return jax.make_array_from_callback(host.shape, value.sharding, lambda index: host[index])

        return map_params(take, params)


def init_fresh_from_backbone(graphdef: nnx.GraphDef, params: nnx.State, fresh: frozenset[str]) -> nnx.State:
    """`params` with the `fresh` parameters recomputed by the model's `init_adapters_from_backbone` from the loaded
    ones (δ-mem's base slices read the loaded q/o kernels, not the random ones); every other parameter, loaded
    adapters included, is kept as it is. Shardings are kept."""

    def reinit(params):
        model = nnx.merge(graphdef, params)
        model.init_adapters_from_backbone()
        derived = flat_params(nnx.state(model, nnx.Param))
        return map_params(lambda name, value: derived[name] if name in fresh else value, params)

    return jax.jit(reinit, out_shardings=jax.tree.map(lambda x: x.sharding, params))(params)
