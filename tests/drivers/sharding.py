"""Run by tests/test_sharding*.py in a fresh process with 8 fake CPU devices (XLA_FLAGS must be set before jax
is imported, so this cannot run inside the pytest process). Prints one JSON object on the last line."""

import json
import sys
from pathlib import Path

import jax

from memlab.config import load_config
from memlab.train.loop import train

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: make `tests.helpers` importable
from tests.helpers import TINY  # noqa: E402

# the tiny config of the in-process tests, logging every step, with q/k/v convs back on (the sharding cases were
# measured on the experiment's own attention)
OVERRIDES = [*TINY, "model.qkv_conv=True", "train.log_every=1"]


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def run(workdir: Path, mesh: tuple[int, int, int], *extra: str) -> dict:
    from memlab.parallel import maybe_initialize_distributed

    overrides = [*OVERRIDES, f"mesh.data={mesh[0]}", f"mesh.fsdp={mesh[1]}", f"mesh.tensor={mesh[2]}", *extra]
    config = load_config(ROOT / "experiments" / "mqar.py", overrides)
    maybe_initialize_distributed(config.mesh)
    train(config, workdir)
    curve = losses(workdir) if jax.process_index() == 0 else None  # only process 0 writes metrics
    return {"losses": curve, "processes": jax.process_count(), "devices": jax.device_count()}


def shardings(mesh: tuple[int, int, int], *extra: str) -> dict:
    """Shardings of parameters created the way the trainer creates them: {param path: PartitionSpec string}."""
    from flax import nnx

    from memlab.models import build_model
    from memlab.parallel import create_sharded, make_mesh, param_shardings, parse_rules

    config = load_config(
        ROOT / "experiments" / "mqar.py",
        [*OVERRIDES, f"mesh.data={mesh[0]}", f"mesh.fsdp={mesh[1]}", f"mesh.tensor={mesh[2]}", *extra],
    )
    m = make_mesh(config.mesh)
    build = lambda: build_model(config.model, 0)
    _, abstract = nnx.split(nnx.eval_shape(build), nnx.Param)
    params = create_sharded(
        lambda: nnx.split(build(), nnx.Param)[1], param_shardings(abstract, m, parse_rules(config.mesh.rules))
    )
    out = {}
    for path, array in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]  # the Variable's own `.value` has neither
        name = "/".join(str(k) for k in keys if k is not None)
        out[name] = [list(a) if isinstance(a, tuple) else a for a in array.sharding.spec]
    return out


def kernels(mesh: tuple[int, int, int], backend: str) -> dict:
    """delta_rule through `map_shards` (batch over data x fsdp, heads over tensor) against the same op on one
    device: forward output and the gradients of every input; also the sharding the output comes back with."""
    import jax.numpy as jnp
    import numpy as np

    import pallas_kernels
    from memlab.parallel import DEFAULT_RULES, logical_rules, make_mesh, map_shards, parse_rules

    rng = np.random.default_rng(0)
    B, T, H, K = 4, 24, 4, 8
    x = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
    q, k, v = x(B, T, H, K), 0.4 * x(B, T, H, K), x(B, T, H, K)
    beta, g = jax.nn.sigmoid(x(B, T, H)), -jax.nn.softplus(x(B, T, H))
    seg = jnp.asarray(np.cumsum(rng.random((B, T)) < 0.2, axis=1), jnp.int32)
    heads, gates = ("batch", "seq", "heads", None), ("batch", "seq", "heads")

    def op(q, k, v, beta, g, seg):
        return pallas_kernels.delta_rule(q, k, v, beta, g=g, segment_ids=seg, chunk_size=8, backend=backend)[0]

    def loss(args, sharded):
        o = (
            map_shards(op, [*args, seg], [heads, heads, heads, gates, gates, ("batch", "seq")], heads)
            if sharded
            else op(*args, seg)
        )
        return jnp.sum(jnp.cos(jnp.arange(o.size, dtype=o.dtype)).reshape(o.shape) * o), o

    args = (q, k, v, beta, g)
    (_, o1), g1 = jax.value_and_grad(lambda a: loss(a, False), has_aux=True)(args)
    config = load_config(
        ROOT / "experiments" / "mqar.py", [f"mesh.data={mesh[0]}", f"mesh.fsdp={mesh[1]}", f"mesh.tensor={mesh[2]}"]
    )
    with jax.set_mesh(make_mesh(config.mesh)), logical_rules(parse_rules(DEFAULT_RULES)):
        (_, o8), g8 = jax.jit(jax.value_and_grad(lambda a: loss(a, True), has_aux=True))(args)
    diff = lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
    return {
        "output": diff(o8, o1),
        "grads": [diff(a, b) for a, b in zip(g8, g1, strict=True)],
        "spec": [list(a) if isinstance(a, tuple) else a for a in o8.sharding.spec],
    }


if __name__ == "__main__":
    command, workdir = sys.argv[1], Path(sys.argv[2])
    mesh = tuple(int(x) for x in sys.argv[3].split(",")) if command != "shardings" else None
    extra = sys.argv[4:]
    if command == "train":
        result = run(workdir, mesh, *extra)
    elif command == "kernels":  # one result per backend named in extra, e.g. chunked pallas
        result = {backend: kernels(mesh, backend) for backend in extra}
    else:  # extra: one JSON list of overrides per config, e.g. '[]' '["mesh.rules=..."]'; mesh "2,2,2;8,1,1"
        meshes = [tuple(int(x) for x in m.split(",")) for m in sys.argv[3].split(";")]
        result = {"specs": [shardings(m, *json.loads(e)) for m, e in zip(meshes, extra, strict=True)]}
    print(json.dumps(result))
