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


def _name(keypath) -> str:
    """The path name of a leaf's pytree key path (dict keys only: the Variable's own `.value` key is dropped)."""
    return path_name(tuple(k.key for k in keypath if isinstance(k, jax.tree_util.DictKey)))


def flat_params(state: nnx.State) -> dict[str, jax.Array]:
    """{path name: array} of a parameter state (arrays or ShapeDtypeStructs), in path order."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return dict(sorted((_name(keypath), leaf) for keypath, leaf in leaves))


def map_params(fn, state: nnx.State) -> nnx.State:
    """`state` with each parameter array replaced by `fn(path name, array)`."""
    return jax.tree_util.tree_map_with_path(lambda keypath, leaf: fn(_name(keypath), leaf), state)
