"""Parameter blocks as artifacts: one named sub-tree of a model's parameters (an adapter, a slow block, a layer's
mixer) saved on its own and placed onto another model, e.g. the backbone of a run directory in a fresh process.

A block is a verified snapshot (memlab.store.snapshot: zarr arrays, each in its own dtype, and a manifest with
the SHA-256 of every array and file), so a corrupted block is a CorruptStoreError. It is placed whole or not at
all: the target sub-tree must hold exactly the block's parameter paths with the same shapes and dtypes, and the
model is changed only after every entry has been checked.

Arrays are stored under their source paths (`blocks/1/mixer/q/kernel`); the manifest's `prefix` (`blocks/1/mixer`)
makes them relative (`q/kernel`), so a block can be placed under another prefix (`blocks/3/mixer`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from memlab.errors import ConfigError, CorruptStoreError
from memlab.models.params import flat_params, path_name, under
from memlab.store import snapshot
from memlab.train.checkpoint import load_model

FORMAT = "memlab-param-block/1"


def _join(prefix: str, rel: str) -> str:
    return "/".join(part for part in (prefix, rel) if part)


def _relative(name: str, prefix: str) -> str:
    """`q/kernel` for `blocks/1/mixer/q/kernel` under `blocks/1/mixer` ('' when the prefix is the parameter)."""
    return name[len(prefix) :].lstrip("/") if prefix else name


def _select(params: nnx.State, prefix: str) -> dict[str, jax.Array]:
    """{path relative to `prefix`: array} of the sub-tree `prefix`; a ConfigError naming the sub-trees nearest to
    it when it matches no parameter."""
    names = flat_params(params)
    block = {_relative(name, prefix): leaf for name, leaf in names.items() if under(name, prefix)}
    if block:
        return block
    parts = prefix.split("/")
    for depth in range(len(parts) - 1, -1, -1):  # the deepest existing ancestor of the prefix and its sub-trees
        parent = "/".join(parts[:depth])
        children = [_relative(n, parent).split("/")[0] for n in names if under(n, parent)]
        if children:
            accepted = [_join(parent, child) for child in dict.fromkeys(children)]
            raise ConfigError(f"parameter prefix {prefix!r} matches no parameter; accepted sub-trees: {accepted}")
    raise ConfigError(f"parameter prefix {prefix!r} matches no parameter: the model has no parameters")


def _params(model_or_params: nnx.Module | nnx.State) -> nnx.State:
    return nnx.state(model_or_params, nnx.Param) if isinstance(model_or_params, nnx.Module) else model_or_params


def save_block(
    model_or_params: nnx.Module | nnx.State, prefix: str, directory, meta: dict | None = None
) -> dict[str, jax.Array]:
    """Save every parameter under `prefix` as one verified snapshot at `directory`; `meta` (JSON-able, e.g. the
    source run directory, step and model config) is kept in the manifest as `source`. Returns the saved arrays
    by path relative to the prefix."""
    prefix = prefix.strip("/")
    block = _select(_params(model_or_params), prefix)
    arrays = {_join(prefix, rel): leaf for rel, leaf in block.items()}
    snapshot.write(Path(directory), arrays, {"prefix": prefix, "source": meta or {}}, format=FORMAT)
    return block


def load_block(directory) -> tuple[dict[str, np.ndarray], dict]:
    """({path relative to the saved prefix: array}, manifest) of a saved block, every digest verified."""
    directory = Path(directory)
    arrays, manifest = snapshot.read(directory, format=FORMAT)
    prefix = manifest.get("prefix")
    outside = [name for name in arrays if not isinstance(prefix, str) or not under(name, prefix)]
    if outside or not arrays:
        raise CorruptStoreError(
            f"{directory / snapshot.MANIFEST} is corrupted: arrays {outside} lie outside its prefix {prefix!r}"
            if outside
            else f"{directory / snapshot.MANIFEST} is corrupted: it holds no arrays"
        )
    return {_relative(name, prefix): array for name, array in arrays.items()}, manifest


def apply_block(model: nnx.Module, directory, prefix: str | None = None) -> str:
    """Put the block saved at `directory` onto `model` in place, under `prefix` (default: the prefix it was saved
    from); returns the prefix used. Any parameter missing on either side, or differing in shape or dtype, is a
    ConfigError listing them all, and the model is left unchanged."""
    block, manifest = load_block(directory)
    prefix = (manifest["prefix"] if prefix is None else prefix).strip("/")
    params = nnx.state(model, nnx.Param)
    target = _select(params, prefix)
    missing, extra = sorted(set(target) - set(block)), sorted(set(block) - set(target))
    differ = [
        f"{_join(prefix, rel)} (block {list(block[rel].shape)} {block[rel].dtype.name}, "
        f"model {list(target[rel].shape)} {target[rel].dtype})"
        for rel in sorted(set(block) & set(target))
        if block[rel].shape != target[rel].shape or block[rel].dtype != target[rel].dtype
    ]
    problems = [
        f"{what}: {', '.join(names)}"
        for what, names in (
            ("missing from the block", [_join(prefix, rel) for rel in missing]),
            ("not in the model", [_join(prefix, rel) for rel in extra]),
            ("shape or dtype differs", differ),
        )
        if names
    ]
    if problems:
        raise ConfigError(
            f"block {directory} (saved from {manifest['prefix']!r}) does not fit {prefix!r} of the model: "
            + "; ".join(problems)
        )
    paths = {path_name(path): path for path, _ in nnx.to_flat_state(params)}
    update = {paths[_join(prefix, rel)]: jax.device_put(array, target[rel].sharding) for rel, array in block.items()}
    nnx.update(model, nnx.from_flat_state(update))
    return prefix


def load_model_with_block(
    run_dir, block_dir, prefix: str | None = None, step: int | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict, int, str]:
    """(model of the run's checkpoint with the block placed on it, config, step, prefix used)."""
    model, config, step = load_model(run_dir, step)
    return model, config, step, apply_block(model, block_dir, prefix)
