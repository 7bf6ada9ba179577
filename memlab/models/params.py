"""Parameter paths: the '/'-joined names (`blocks/0/mixer/q/kernel`) by which a config selects parameters
(`train.trainable`, `train.init_map`), a model's FLOP stages claim theirs, and a parameter block is saved.

A prefix names a whole sub-tree and matches whole path components only: `blocks/1` covers `blocks/1/mlp/...` but
not `blocks/10/...`; the empty prefix covers every parameter.
"""

from __future__ import annotations

import jax
from flax import nnx


def path_name(path: tuple) -> str:
    """`('blocks', 0, 'mlp', 'up', 'kernel')` -> `'blocks/0/mlp/up/kernel'`."""
    return "/".join(str(part) for part in path)


def under(name: str, prefix: str) -> bool:
    """Whether the parameter `name` lies in the sub-tree `prefix` (whole components; '' covers all)."""
    prefix = prefix.strip("/")
    return not prefix or name == prefix or name.startswith(prefix + "/")


def flat_params(state: nnx.State) -> dict[str, jax.Array]:
    """{path name: array} of a parameter state (arrays or ShapeDtypeStructs), in path order."""
    return {path_name(path): leaf for path, leaf in sorted(_leaves(state), key=lambda kv: path_name(kv[0]))}


def _leaves(state: nnx.State):
    for path, variable in nnx.to_flat_state(state):
        yield path, variable.get_raw_value() if isinstance(variable, nnx.Variable) else variable


def map_params(fn, state: nnx.State) -> nnx.State:
    """`state` with each parameter array replaced by `fn(path name, array)`."""

    def call(keypath, leaf):
        return fn(path_name(tuple(k.key for k in keypath if isinstance(k, jax.tree_util.DictKey))), leaf)

    return jax.tree_util.tree_map_with_path(call, state)
