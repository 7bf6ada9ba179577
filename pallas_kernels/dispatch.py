"""Backend registry and the ``backend="auto"`` policy, shared by every op of the package (delta_rule,
linear_attention, mlstm).

Each op registers one callable per backend. ``auto`` resolves per platform (``jax.default_backend()``):

* cpu: ``chunked``. Measured with ``python -m pallas_kernels.benchmark`` (see BENCHMARKS.md, 2-core CPU):
  forward+backward of the pure-JAX chunked form is 3.9-24x faster than the token-serial reference with
  13-50x less temp memory, and 1.5-2x faster than Pallas in interpret mode. For the mLSTM
  (``--op mlstm``, B=1 T=512 H=4 K=V=64) forward+backward is 9.8x faster than the reference with 18x less temp
  memory; the forward alone is 1.7x slower there (4.4 vs 7.3 ms), but training needs the backward.
* gpu, tpu and anything else: ``chunked`` until the Pallas kernels have been measured and validated there (the
  Triton/Mosaic lowering has not run on real hardware yet; ``backend="pallas"`` selects it explicitly).
"""

from __future__ import annotations

from typing import Callable

import jax

_REGISTRY: dict[str, dict[str, Callable]] = {}

AUTO_POLICY = {"cpu": "chunked"}
AUTO_DEFAULT = "chunked"


def register(op: str, backend: str, fn: Callable) -> None:
    _REGISTRY.setdefault(op, {})[backend] = fn


def auto_backend(platform: str | None = None) -> str:
    platform = platform or jax.default_backend()
    return AUTO_POLICY.get(platform, AUTO_DEFAULT)


def resolve(op: str, backend: str) -> tuple[str, Callable]:
    """Return (concrete backend name, implementation) for ``op``."""
    name = auto_backend() if backend == "auto" else backend
    impls = _REGISTRY.get(op, {})
    if name not in impls:
        raise ValueError(f"backend is {backend!r}, but op {op!r} only has {sorted(impls)}")
    return name, impls[name]
