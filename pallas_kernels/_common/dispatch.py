"""Backend registry and the ``backend="auto"`` policy, shared by every op of the package (delta_rule,
linear_attention, mlstm); public as ``pallas_kernels.dispatch``.

Each op registers one callable per backend (in its subpackage's ``__init__``). ``auto`` resolves per platform
(``jax.default_backend()``):

* cpu: ``chunked``. On CPU its forward+backward beats both the token-serial reference (in time and compiled
  temp memory) and Pallas in interpret mode at every point measured, for the delta rule and the mLSTM; the
  figures and the commands that measure them are in BENCHMARKS.md (section pallas_kernels). Training needs the
  backward, so the forward alone (where the reference can be faster) does not decide.
* gpu, tpu and anything else: ``chunked`` until the Pallas kernels have been measured there. They lower to
  Triton and Mosaic (tests/kernels/test_lowering.py) but have not run on a GPU or TPU in this repository yet;
  ``scripts/gpu_check.sh`` measures both backends on a GPU and BENCHMARKS.md records the figures that decide.
  ``backend="pallas"`` selects the kernels explicitly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

_REGISTRY: dict[str, dict[str, Callable]] = {}

AUTO_POLICY = {"cpu": "chunked"}
AUTO_DEFAULT = "chunked"


def register(op: str, backend: str, fn: Callable) -> None:
    """Make ``fn`` the implementation of ``op`` under the name ``backend``."""
    _REGISTRY.setdefault(op, {})[backend] = fn


def auto_backend(platform: str | None = None) -> str:
    """The backend ``auto`` stands for on ``platform`` (default: the current JAX backend)."""
    platform = platform or jax.default_backend()
    return AUTO_POLICY.get(platform, AUTO_DEFAULT)


def resolve(op: str, backend: str) -> tuple[str, Callable]:
    """Return (concrete backend name, implementation) for ``op``."""
    name = auto_backend() if backend == "auto" else backend
    impls = _REGISTRY.get(op, {})
    if name not in impls:
        raise ValueError(f"backend is {backend!r}, but op {op!r} only has {sorted(impls)}")
    return name, impls[name]
