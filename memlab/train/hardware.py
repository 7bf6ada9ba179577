"""Peak dense FLOP/s of common accelerators, for the model FLOPs utilization (MFU) every run logs.

MFU is the achieved training FLOP/s (the analytic FLOPs of the steps, over their wall time, per device) divided by
the device's peak: the one number that says whether a run uses its hardware well, comparable across models, sizes
and machines. Levanter (`levanter.utils.flop_utils`) and MaxText log it the same way, from a table of vendor peak
numbers keyed by `jax.devices()[0].device_kind`; this is that table and its lookup. An unknown device (a CPU, a
new chip) has no peak: the run logs its achieved FLOP/s and no MFU.

Numbers are per JAX device (one GPU; one TPU chip on v4/v5e/v5p/v6e, where a device is a chip) and dense: NVIDIA
prints tensor-core figures "with sparsity", twice the dense rate, so those are halved here. The key is the
training precision (`train.precision`). For float32 the peak is what XLA actually runs a float32 matmul at under
JAX's default matmul precision: TF32 tensor cores on Ampere and later GPUs, plain FP32 on Volta (no TF32), and
one bfloat16 pass on TPU (`jax.lax.Precision.DEFAULT`), so an fp32 run's MFU is not inflated past 1.
"""

from __future__ import annotations

import re

BF16, FP32 = "bfloat16", "float32"

# (pattern on the lowercased device_kind, name, {precision: peak dense FLOP/s per device}); the first match wins, so
# the more specific patterns (PCIe, NVL, lite) come before the general ones.
PEAKS: list[tuple[str, str, dict[str, float]]] = [
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100, "H100 Tensor Core GPU Datasheet"): PCIe
    # BF16 1,513 / TF32 756 TFLOPS with sparsity; NVL BF16 1,671 / TF32 835 with sparsity; SXM BF16 1,979 / TF32 989
    # with sparsity. device_kind e.g. "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3".
    (r"h100.*pcie", "H100 PCIe", {BF16: 1513e12 / 2, FP32: 756e12 / 2}),
    (r"h100.*nvl", "H100 NVL", {BF16: 1671e12 / 2, FP32: 835e12 / 2}),
    (r"h100", "H100 SXM", {BF16: 1979e12 / 2, FP32: 989e12 / 2}),
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): NVL BF16 1,671 / TF32 835 TFLOPS with sparsity;
    # SXM BF16 1,979 / TF32 989 with sparsity (GH200's GPU has the same figures). device_kind "NVIDIA H200".
    (r"h200.*nvl", "H200 NVL", {BF16: 1671e12 / 2, FP32: 835e12 / 2}),
    (r"h200", "H200 SXM", {BF16: 1979e12 / 2, FP32: 989e12 / 2}),
    # NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): BF16 312, TF32 156 TFLOPS dense,
    # the same for 40 GB and 80 GB, SXM and PCIe. device_kind e.g. "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB".
    (r"a100", "A100", {BF16: 312e12, FP32: 156e12}),
    # NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4): BF16 242, TF32 120 TFLOPS with sparsity.
    # A word boundary keeps "NVIDIA L40S" out.
    (r"\bl4\b", "L4", {BF16: 242e12 / 2, FP32: 120e12 / 2}),
    # NVIDIA A10 datasheet (a10-datasheet.pdf): BF16 125, TF32 62.5 TFLOPS dense. NVIDIA publishes no sheet for the
    # A10G (AWS G5); like Levanter we use the A10's figures, so its MFU may read low.
    (r"\ba10g?\b", "A10G", {BF16: 125e12, FP32: 62.5e12}),
    # NVIDIA V100 datasheet (volta-v100-datasheet-update-us-1165301-r5.pdf): FP32 15.7 (SXM2), 14 (PCIe), 16.4
    # (V100S) TFLOPS. Volta's tensor cores take FP16 only, not BF16 or TF32: both precisions run at the FP32 rate.
    (r"v100s", "V100S PCIe", {BF16: 16.4e12, FP32: 16.4e12}),
    (r"v100.*pcie", "V100 PCIe", {BF16: 14e12, FP32: 14e12}),
    (r"v100", "V100 SXM2", {BF16: 15.7e12, FP32: 15.7e12}),
    # Google Cloud TPU docs (cloud.google.com/tpu/docs/v5e, /v5p, /v6e, /v4): peak BF16 per chip 197 (v5e), 459
    # (v5p), 918 (v6e Trillium), 275 (v4) TFLOPS. Float32 matmuls run as one BF16 pass under JAX's default precision.
    # device_kind "TPU v5 lite" (v5e), "TPU v5p" or "TPU v5" (v5p), "TPU v6 lite" (v6e), "TPU v4".
    (r"tpu v5 ?(lite|e\b)", "TPU v5e", {BF16: 197e12, FP32: 197e12}),
    (r"tpu v5p?$|tpu v5p\b", "TPU v5p", {BF16: 459e12, FP32: 459e12}),
    (r"tpu v6 ?(lite|e\b)|trillium", "TPU v6e", {BF16: 918e12, FP32: 918e12}),
    (r"tpu v4$", "TPU v4", {BF16: 275e12, FP32: 275e12}),
]


def _entry(device_kind: str) -> tuple[str, str, dict[str, float]] | None:
    """The first table entry whose pattern matches `device_kind` (lowercased, spaces collapsed), or None."""
    kind = " ".join(device_kind.lower().split())
    return next((entry for entry in PEAKS if re.search(entry[0], kind)), None)


def accelerator(device_kind: str) -> str | None:
    """The table's name for `device_kind` (a `jax.Device.device_kind`), or None if the table does not know it."""
    entry = _entry(device_kind)
    return None if entry is None else entry[1]


def peak_flops(device_kind: str, precision: str = BF16) -> float | None:
    """Peak dense FLOP/s of one device of kind `device_kind` training in `precision` ("bfloat16" | "float32"), or
    None for a device the table does not know (a CPU, say)."""
    entry = _entry(device_kind)
    return None if entry is None else entry[2].get(precision)


def device_kind() -> str:
    """This process's accelerator kind, as JAX names it ("NVIDIA H100 80GB HBM3", "TPU v5 lite", "cpu")."""
    import jax

    return jax.devices()[0].device_kind
