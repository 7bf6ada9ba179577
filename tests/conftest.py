"""Shared fixtures: W&B stays offline and never sees a key; tiny configs keep training tests to seconds.

XLA compilation is most of a tiny training run's cost on the CPU, and many tests (and the `memlab train` and
tests/sharding_driver.py processes they start) compile exactly the same computations. One JAX persistent
compilation cache per test session, shared by the xdist workers and every subprocess through the environment,
compiles each of them once: a hit returns the executable XLA built for the identical program, options and
devices (XLA_FLAGS are part of the key), so no test sees different code. The directory is fresh for each session
(nothing carries over between runs) and removed at the end; a JAX_COMPILATION_CACHE_DIR you set is used instead.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)

_OWN_JAX_CACHE = None


def pytest_configure(config):
    """The session's compilation cache. The xdist controller configures before it starts the workers, which
    inherit the variables and keep the controller's directory. Small programs are cached too (a sharded
    checkpoint alone compiles ~100 slices, which every fresh process would compile again)."""
    global _OWN_JAX_CACHE
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        _OWN_JAX_CACHE = tempfile.mkdtemp(prefix="memlab-test-jax-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_JAX_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    if "jax" in sys.modules:  # imported already (by a plugin): it read the environment before we set it
        sys.modules["jax"].config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        sys.modules["jax"].config.update("jax_persistent_cache_min_compile_time_secs",
                                         float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
    if _OWN_JAX_CACHE is not None:
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


TINY = [
    "data.vocab_size=64", "data.seq_len=32", "data.num_kv_pairs=4",
    "model.d_model=32", "model.num_heads=2", "model.num_layers=2", "model.qkv_conv=False",  # plain transformer
    "train.steps=20", "train.warmup_steps=2", "train.batch_size=8", "train.eval_every=10",
    "train.checkpoint_every=10", "train.log_every=5", "eval.num_examples=32", "eval.batch_size=16",
    "logging.wandb_mode=disabled", "logging.progress=False",
]


@pytest.fixture
def tiny_config():
    """Build a resolved MQAR config from the tiny defaults plus extra `key=value` overrides."""
    from memlab.config import load_config

    def make(*overrides: str):
        return load_config(ROOT / "experiments" / "mqar.py", [*TINY, *overrides])
    return make


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


SHARDING_DRIVER = str(ROOT / "tests" / "sharding_driver.py")


def driver_command(*args: str) -> list[str]:
    return [sys.executable, SHARDING_DRIVER, *args]


def fake_devices_env(devices: int) -> dict:
    """Environment of a tests/sharding_driver.py process: `devices` fake CPU devices.

    Every sharded case compiles its own programs (the mesh is part of them), and LLVM's optimisation of the
    generated CPU code is ~3/4 of XLA's compile time for them, so these processes compile at LLVM -O0
    (--xla_backend_optimization_level=0, 3-4x faster to build). What the sharding tests compare is settled before
    that stage (SPMD partitioning, collectives and shard_map are HLO passes); both sides of every comparison (the
    single-device reference is a driver process too) are built the same way; the in-process tests run the
    optimised code."""
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


def drive(*args: str, devices: int = 8, extra_env: dict | None = None) -> dict:
    """Run tests/sharding_driver.py with `devices` fake CPU devices; its JSON result."""
    env = {**fake_devices_env(devices), **(extra_env or {})}
    out = subprocess.run(driver_command(*args), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def rollback(run_dir, step: int) -> None:
    """Make a finished run look like it died right after its checkpoint at `step`."""
    for d in (run_dir / "checkpoints").iterdir():
        if d.name.isdigit() and int(d.name) > step:
            shutil.rmtree(d)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running", "step": step}))


@pytest.fixture(scope="session")
def single_device(tmp_path_factory):
    """Loss curve of the sharding driver's tiny run on a (1,1,1) mesh: the reference of tests/test_sharding*.py,
    computed once per session. Under xdist the first worker to need it runs the driver and leaves the curve in the
    directory the workers share; the other reads it (the pattern pytest-xdist documents for session fixtures)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return drive("train", str(tmp_path_factory.mktemp("single")), "1,1,1")["losses"]
    import fcntl

    shared = tmp_path_factory.getbasetemp().parent  # this session's, common to its workers
    with open(shared / "single_device.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = shared / "single_device.json"
        if not result.exists():
            result.write_text(json.dumps(drive("train", str(tmp_path_factory.mktemp("single")), "1,1,1")["losses"]))
        return json.loads(result.read_text())
