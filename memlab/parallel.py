"""Devices, mesh and sharding: one mesh with axes ("data", "fsdp", "tensor") and logical axis rules.

Parameters carry logical axis names (`embed`, `heads`, `mlp`, `vocab`, ...) from the model code; `mesh.rules` maps
each name to a mesh axis (or several, or none). Parameters and optimizer state are created directly in their
shardings (the init function is jitted with out_shardings, so no full copy lives on one device); the batch is
split over ("data", "fsdp"). The same code runs on one CPU, on 8 fake CPU devices and on a pod.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memlab.errors import MeshError

log = logging.getLogger("memlab")

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
DEFAULT_RULES = (
    ("batch", "data,fsdp"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("slots", ""),
    ("seq", ""),
)

_RULES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("memlab_logical_rules", default=None)


def parse_rules(rules: Sequence[Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Config rules (("embed", "fsdp"), ("batch", "data,fsdp"), ("slots", "")) -> name -> mesh axes."""
    out = {}
    for item in rules:
        if len(item) != 2:
            raise MeshError(f"mesh.rules entry {item!r} is not a (logical name, mesh axes) pair")
        name, axes = item
        parsed = tuple(a.strip() for a in axes.split(",") if a.strip())
        unknown = [a for a in parsed if a not in AXES]
        if unknown:
            raise MeshError(f"mesh.rules maps {name!r} to unknown mesh axes {unknown}; mesh axes are {AXES}")
        out[name] = parsed
    return out


def mesh_shape(mesh_config, device_count: int) -> tuple[int, int, int]:
    """Sizes of (data, fsdp, tensor); one -1 takes the devices the others leave."""
    sizes = [mesh_config[a] for a in AXES]
    if sizes.count(-1) > 1:
        raise MeshError(f"mesh sizes {dict(zip(AXES, sizes, strict=True))}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if device_count % known:
        raise MeshError(
            f"mesh sizes {dict(zip(AXES, sizes, strict=True))} (product {known}) do not divide the "
            f"{device_count} available devices"
        )
    sizes = [device_count // known if s == -1 else s for s in sizes]
    return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence | None = None) -> Mesh:
    """The mesh on all devices (or the first product-many when the sizes ask for fewer).

    With `mesh.dcn_data` > 1 (multi-slice TPU or multi-node GPU), the data axis spans slices over the slower
    network and the other axes stay within a slice.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(mesh_config, len(devices))
    used = math.prod(shape)
    dcn = mesh_config.get("dcn_data", 1)
    if dcn > 1:
        from jax.experimental import mesh_utils

        if shape[0] % dcn:
            raise MeshError(f"mesh.data={shape[0]} must be a multiple of mesh.dcn_data={dcn}")
        grid = mesh_utils.create_hybrid_device_mesh(
            (shape[0] // dcn, shape[1], shape[2]), (dcn, 1, 1), devices=devices[:used]
        )
    else:
        grid = np.asarray(devices[:used]).reshape(shape)
    return Mesh(grid, AXES)


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: dict) -> P:
    """PartitionSpec for an array with logical axis `names`: each dim gets its rule's mesh axes, unless an axis is
    already used by another dim or the dim does not divide evenly (then that dim is replicated)."""
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape, strict=True):
        axes = tuple(a for a in rules.get(name, ()) if a not in used) if name else ()
        size = math.prod(mesh.shape[a] for a in axes)
        if not axes or dim % size:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def _logical_names(variable) -> tuple | None:
    meta = variable.get_metadata() if hasattr(variable, "get_metadata") else {}
    return meta.get("out_sharding")


def param_shardings(abstract_params: Any, mesh: Mesh, rules: dict) -> Any:
    """NamedSharding per parameter from its logical names (parameters without names are replicated)."""
    from flax import nnx

    def one(variable):
        names = _logical_names(variable) or (None,) * len(variable.shape)
        return NamedSharding(mesh, spec_for(names, variable.shape, mesh, rules))

    return jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def create_sharded(init_fn: Callable[[], Any], shardings) -> Any:
    """Run `init_fn` under jit with `out_shardings`: every device materialises only its own shard."""
    return jax.jit(init_fn, out_shardings=shardings)()


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place this host's part of a batch on the mesh as one global array per field (split over data x fsdp)."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@contextlib.contextmanager
def logical_rules(rules: dict) -> Iterator[None]:
    """Make `rules` the mapping `constrain` uses for activations (inside a step traced under a mesh)."""
    token = _RULES.set(rules)
    try:
        yield
    finally:
        _RULES.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op outside a mesh with rules."""
    rules, mesh = _RULES.get(), jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty or math.prod(mesh.shape.values()) == 1:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(names, x.shape, mesh, rules))


def map_shards(fn: Callable, args: Sequence[jax.Array], names: Sequence[Sequence[str | None]], out_names: Any) -> Any:
    """Run `fn(*args)` per shard under `jax.shard_map`, each array split by its logical axis names.

    For ops that are independent along the named axes (a kernel over batch and heads): every device runs the op on
    its own block, with no gathering. `out_names` mirrors fn's output pytree with a tuple of names per array. A dim
    that a rule maps to no mesh axis, or that does not divide, is whole on every device. Outside a mesh with
    rules (or on one device) this is plain `fn(*args)`. Variance checking is off: `fn` runs no collectives, and
    Pallas in interpret mode (the CPU path) trips JAX's check inside its own grid loop.
    """
    rules, mesh = _RULES.get(), jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty or math.prod(mesh.shape.values()) == 1:
        return fn(*args)
    in_specs = tuple(spec_for(n, a.shape, mesh, rules) for n, a in zip(names, args, strict=True))
    out_shapes = jax.eval_shape(fn, *args)
    is_names = lambda x: isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x)
    out_specs = jax.tree.map(lambda n, s: spec_for(n, s.shape, mesh, rules), out_names, out_shapes, is_leaf=is_names)
    return jax.shard_map(fn, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*args)


def maybe_initialize_distributed(mesh_config) -> None:
    """Join a multi-process job: explicit coordinator settings, or detected SLURM / TPU pod environments.

    jax.distributed.initialize() auto-detects the cluster (SLURM, TPU metadata, Open MPI) when called without
    arguments; we call it only when such an environment (or an explicit coordinator) is present, so single-process
    runs never wait on a coordinator.
    """
    if jax.distributed.is_initialized():
        return
    # CPU processes exchange collectives over gloo (GPU/TPU use their own interconnect; this flag only affects CPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = mesh_config.get("coordinator_address", "")
    if address:
        jax.distributed.initialize(
            coordinator_address=address, num_processes=mesh_config.num_processes, process_id=mesh_config.process_id
        )
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        jax.distributed.initialize()
    else:
        return
    log.info(
        "joined distributed job: process %d of %d, %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )
