"""Shared fixtures: W&B stays offline and never sees a key; tiny configs keep training tests to seconds.

XLA compilation is most of a tiny training run's cost on the CPU, and many tests (and the `memlab train` and
tests/drivers/sharding.py processes they start) compile exactly the same computations. One JAX persistent
compilation cache per test session, shared by the xdist workers and every subprocess through the environment,
compiles each of them once: a hit returns the executable XLA built for the identical program, options and
devices (XLA_FLAGS are part of the key), so no test sees different code. The directory is fresh for each session
and removed at the end, unless JAX_COMPILATION_CACHE_DIR names one: scripts/test.sh keeps one across runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import pytest

from tests.helpers import ROOT, TINY, drive

os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)
# Training runs skip the XLA FLOP cross-check (it compiles the step again, seconds a run): the tests of each model
# family's count compare it with the analytic one directly, and the summary tests that read it turn it on.
os.environ["MEMLAB_XLA_FLOPS"] = "0"

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
        sys.modules["jax"].config.update(
            "jax_persistent_cache_min_compile_time_secs",
            float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
        )


def pytest_unconfigure(config):
    if _OWN_JAX_CACHE is not None:
        shutil.rmtree(_OWN_JAX_CACHE, ignore_errors=True)


@pytest.fixture
def tiny_config():
    """Build a resolved MQAR config from the tiny defaults plus extra `key=value` overrides."""
    from memlab.config import load_config

    def make(*overrides: str):
        return load_config(ROOT / "experiments" / "mqar.py", [*TINY, *overrides])

    return make


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


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    """A tiny prepared byte-text corpus (a few hundred bytes per split, lines unique so windows differ)."""
    from memlab.data.prepare import prepare

    root = tmp_path_factory.mktemp("corpus")
    (src := root / "docs").mkdir()
    for d in range(8):
        (src / f"doc{d}.txt").write_text("".join(f"doc {d} line {i}\n" for i in range(12)))
    prepare(str(src), root / "text", validation_fraction=0.25, progress=False)
    return str(root / "text")
