"""Helpers shared by the tests: tiny configs, the compiled forward, the CLI and driver commands, kernel inputs
and their comparison.

Imported as `from tests.helpers import ...` (never from a conftest). Nothing here imports jax at module level:
tests/conftest.py imports this module before it points jax at the session's compilation cache.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ROOT / "tests" / "drivers"

TINY = [
    "data.vocab_size=64",
    "data.seq_len=32",
    "data.num_kv_pairs=4",
    "model.d_model=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.qkv_conv=False",  # plain transformer
    "train.steps=20",
    "train.warmup_steps=2",
    "train.batch_size=8",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.log_every=5",
    "eval.num_examples=32",
    "eval.batch_size=16",
    "logging.wandb_mode=disabled",
    "logging.progress=False",
]


def logits_of(model, batch):
    """The model's logits through one compiled forward, as training runs it (op-by-op dispatch would compile
    every primitive of the model separately, several times the cost of a test)."""
    return _jitted_forward()(model, batch)


@functools.cache
def _jitted_forward():
    from flax import nnx  # imported on first use: jax must see the compilation-cache settings first

    return nnx.jit(lambda model, batch: model(batch)["logits"])


def memlab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "memlab.cli", *args]


SHARDING_DRIVER = str(DRIVERS / "sharding.py")


def driver_command(*args: str) -> list[str]:
    return [sys.executable, SHARDING_DRIVER, *args]


def fake_devices_env(devices: int) -> dict:
    """Environment of a tests/drivers/sharding.py process: `devices` fake CPU devices.

    Every sharded case compiles its own programs (the mesh is part of them), and LLVM's optimisation of the
    generated CPU code is ~3/4 of XLA's compile time for them, so these processes compile at LLVM -O0
    (--xla_backend_optimization_level=0, 3-4x faster to build). What the sharding tests compare is settled before
    that stage (SPMD partitioning, collectives and shard_map are HLO passes); both sides of every comparison (the
    single-device reference is a driver process too) are built the same way; the in-process tests run the
    optimised code."""
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


def drive(*args: str, devices: int = 8, extra_env: dict | None = None) -> dict:
    """Run tests/drivers/sharding.py with `devices` fake CPU devices; its JSON result."""
    env = {**fake_devices_env(devices), **(extra_env or {})}
    out = subprocess.run(driver_command(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def rollback(run_dir, step: int) -> None:
    """Make a finished run look like it died right after its checkpoint at `step`."""
    for d in (run_dir / "checkpoints").iterdir():
        if d.name.isdigit() and int(d.name) > step:
            shutil.rmtree(d)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running", "step": step}))


def make_inputs(B=2, T=13, H=3, K=4, V=5, *, dtype=None, gated=True, h0=False, segments=False, key_scale=0.5, seed=0):
    """Inputs for delta_rule / linear_attention. Keys are scaled down so that beta * |k|^2 stays < 2 (the
    stable regime of the delta rule) unless ``key_scale`` says otherwise."""
    import jax.numpy as jnp
    import numpy as np

    dtype = jnp.float32 if dtype is None else dtype
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s)
    d = dict(
        q=jnp.asarray(f(B, T, H, K), dtype),
        k=jnp.asarray(f(B, T, H, K) * key_scale, dtype),
        v=jnp.asarray(f(B, T, H, V), dtype),
        beta=jnp.asarray(1 / (1 + np.exp(-f(B, T, H))), dtype),
    )
    acc = jnp.float64 if dtype == jnp.float64 else jnp.float32
    if gated:
        d["g"] = jnp.asarray(-np.log1p(np.exp(f(B, T, H))) * 0.5, dtype)
    if h0:
        d["initial_state"] = jnp.asarray(f(B, H, K, V), acc)
    if segments:
        d["segment_ids"] = jnp.asarray(np.cumsum(rng.random((B, T)) < 0.25, axis=1), jnp.int32)
    return d


def numpy_recurrence(d: dict, delta: bool, scale: float, read_before_write: bool = False):
    """(o [B, T, H, V], final state [B, H, K, V]) of the delta rule (``delta``) or linear attention on the inputs
    ``d`` of :func:`make_inputs`, transcribed literally in float64 numpy, token by token: reset at a new segment,
    decay, write, and the read o_t = S^T (scale q_t) after the write, or before the decay and write with
    ``read_before_write``. The oracle of the oracle."""
    import numpy as np

    q, k, v = (np.asarray(d[n], np.float64) for n in ("q", "k", "v"))
    B, T, H, K = q.shape
    beta = np.asarray(d["beta"], np.float64)
    g = np.asarray(d["g"], np.float64) if "g" in d else np.zeros((B, T, H))
    seg = np.asarray(d["segment_ids"]) if "segment_ids" in d else np.zeros((B, T), int)
    S_all = (
        np.asarray(d["initial_state"], np.float64).copy() if "initial_state" in d else np.zeros((B, H, K, v.shape[-1]))
    )
    o = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            S = S_all[b, h]
            for t in range(T):
                if t > 0 and seg[b, t] != seg[b, t - 1]:
                    S = np.zeros_like(S)
                if read_before_write:
                    o[b, t, h] = S.T @ (scale * q[b, t, h])
                S = np.exp(g[b, t, h]) * S
                u = beta[b, t, h] * (v[b, t, h] - S.T @ k[b, t, h]) if delta else v[b, t, h]
                S = S + np.outer(k[b, t, h], u)
                if not read_before_write:
                    o[b, t, h] = S.T @ (scale * q[b, t, h])
            S_all[b, h] = S
    return o, S_all


def run_kernel(op: str, d: dict, backend: str, chunk_size: int, **options):
    """Outputs, final state and gradients w.r.t. every float input of ``d`` (from :func:`make_inputs`) of the
    pallas_kernels op ``op`` ("delta_rule" or "linear_attention"), through a loss that weights every output
    position and state entry differently; ``options`` go to the op (scale, read_before_write, ...)."""
    import jax
    import jax.numpy as jnp

    import pallas_kernels

    d = dict(d)
    if op == "linear_attention":
        d.pop("beta", None)
    seg = d.pop("segment_ids", None)
    diff = {k: d.pop(k) for k in ("q", "k", "v", "beta", "g", "initial_state") if k in d}

    def loss(diff):
        args = dict(diff, **d)
        q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
        pos = (q, k, v) + ((args.pop("beta"),) if op == "delta_rule" else ())
        o, s = getattr(pallas_kernels, op)(
            *pos, **args, **options, segment_ids=seg, return_final_state=True, chunk_size=chunk_size, backend=backend
        )
        of = o.astype(s.dtype)
        w = jnp.cos(jnp.arange(of.size, dtype=s.dtype)).reshape(of.shape)
        return jnp.sum(w * of) + 0.5 * jnp.sum(jnp.sin(s)), (o, s)

    (_, (o, s)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(diff)
    return o, s, grads


def assert_close(a, b, rtol: float, atol: float, what: str) -> None:
    """Finite and allclose, compared in float64."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)), what
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def assert_causal(outputs_of, tokens, vocab_size: int, positions=(0, 5, -1), atol: float = 1e-6) -> None:
    """Perturb token j (for each j in `positions`) and assert that `outputs_of(tokens)` [B, T, ...] before j is
    unchanged while j itself or a later output sees the change: the causality check every family runs, through its
    training forward and its decoding path."""
    import numpy as np

    base = np.asarray(outputs_of(tokens))
    for j in positions:
        j = j % tokens.shape[1]
        changed = tokens.at[:, j].set((tokens[:, j] + 7) % vocab_size)
        out = np.asarray(outputs_of(changed))
        np.testing.assert_allclose(out[:, :j], base[:, :j], atol=atol, err_msg=f"position < {j} saw token {j}")
        assert not np.allclose(out[:, j:], base[:, j:], atol=1e-4), f"nothing from position {j} on saw token {j}"


def decoded_logits(model, tokens):
    """Logits [B, T, V] of feeding `tokens` [B, T] one at a time through the model's decoding step (its cache)."""
    import jax.numpy as jnp
    from flax import nnx

    step = nnx.jit(type(model).decode_step)
    cache, out = model.init_cache(tokens.shape[0], tokens.shape[1]), []
    for t in range(tokens.shape[1]):
        logits, cache = step(model, tokens[:, t], cache)
        out.append(logits)
    return jnp.stack(out, axis=1)


def analytic_and_xla_flops(cfg, batch_size: int = 4) -> tuple[float, float]:
    """Training FLOPs per token of a token-sequence config: the analytic count and XLA's, on a zero batch."""
    import jax.numpy as jnp
    from flax import nnx

    from memlab.data.pipeline import example_shapes
    from memlab.models import build_model
    from memlab.train.flops import analytic_flops_per_token, xla_flops_per_token
    from memlab.train.step import make_grad_fn

    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    shapes = example_shapes(cfg)
    batch = {k: jnp.zeros((batch_size, *s), jnp.float32 if "mask" in k else jnp.int32)
             for k, s in shapes.items()}  # fmt: skip
    tokens = shapes["inputs"][0]
    analytic = analytic_flops_per_token(model, shapes, tokens, weights=dict(cfg.objective))
    return analytic, xla_flops_per_token(make_grad_fn(graphdef, dict(cfg.objective)), params, batch, tokens)
