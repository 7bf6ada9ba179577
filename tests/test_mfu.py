"""Achieved FLOP/s and MFU in every run: the peak table's lookup, the rates a tiny run logs (recomputed from its own
metrics rows), a curriculum window priced at both FLOP rates, and MFU against a (monkeypatched) known device."""

import json
from pathlib import Path

import ml_collections
import pytest

from memlab.train import hardware
from memlab.train.hardware import accelerator, peak_flops
from memlab.train.loop import HostMetrics, train
from memlab.train.run_dir import Compute


@pytest.mark.parametrize(
    "kind, name, bf16",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5e12),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5e12),
        ("NVIDIA H200", "H200 SXM", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
        ("NVIDIA A100-PCIE-40GB", "A100", 312e12),
        ("NVIDIA L4", "L4", 121e12),
        ("NVIDIA A10G", "A10G", 125e12),
        ("Tesla V100-SXM2-16GB", "V100 SXM2", 15.7e12),
        ("TPU v4", "TPU v4", 275e12),
        ("TPU v5 lite", "TPU v5e", 197e12),
        ("TPU v5p", "TPU v5p", 459e12),
        ("TPU v6 lite", "TPU v6e", 918e12),
    ],
)
def test_lookup_matches_real_device_kinds(kind, name, bf16):
    assert accelerator(kind) == name
    assert peak_flops(kind, "bfloat16") == pytest.approx(bf16)
    assert 0 < peak_flops(kind, "float32") <= peak_flops(kind, "bfloat16")


@pytest.mark.parametrize("kind", ["cpu", "TFRT_CPU_0", "NVIDIA L40S", "NVIDIA GeForce RTX 4090", "TPU v4 lite", ""])
def test_lookup_is_none_for_cpu_and_unknown_devices(kind):
    assert accelerator(kind) is None and peak_flops(kind, "bfloat16") is None


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def check_rates(metrics: list[dict], peak: float | None) -> None:
    """Each row's tflops_per_s_per_device is its window's FLOPs over its time (tokens over tokens_per_s), one
    device; mfu is that over `peak`, and absent without one."""
    previous = {"tokens": 0, "flops": 0.0}
    for r in metrics:
        seconds = (r["tokens"] - previous["tokens"]) / r["tokens_per_s"]
        expected = (r["flops"] - previous["flops"]) / seconds / 1 / 1e12
        assert r["tflops_per_s_per_device"] == pytest.approx(expected, rel=1e-6)
        if peak is None:
            assert "mfu" not in r
        else:
            assert r["mfu"] == pytest.approx(r["tflops_per_s_per_device"] * 1e12 / peak, rel=1e-9)
        previous = r


def test_tiny_run_logs_achieved_flops_and_no_mfu_on_cpu(tiny_config, tmp_path):
    summary = train(tiny_config("train.steps=10"), tmp_path)
    metrics = rows(tmp_path)
    assert [r["step"] for r in metrics] == [5, 10]
    check_rates(metrics, None)
    assert summary["device_kind"] == "cpu" and summary["peak_flops_per_s_per_device"] is None
    assert summary["mfu"] is None and summary["tflops_per_s_per_device"] > 0 and summary["train_seconds"] > 0
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["tflops_per_s_per_device"] == pytest.approx(summary["tflops_per_s_per_device"])


def test_mfu_is_achieved_over_peak_on_a_known_device(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr("memlab.train.loop.device_kind", lambda: "NVIDIA H100 80GB HBM3")
    summary = train(tiny_config("train.steps=4", "train.log_every=2"), tmp_path)
    peak = hardware.peak_flops("NVIDIA H100 80GB HBM3", "float32")  # the tiny config trains in float32
    assert summary["peak_flops_per_s_per_device"] == peak
    check_rates(rows(tmp_path), peak)
    assert summary["mfu"] == pytest.approx(summary["tflops_per_s_per_device"] * 1e12 / peak, rel=1e-9)


def test_a_window_across_the_curriculum_switch_prices_each_step_at_its_rate():
    compute = Compute(tokens_per_step=10, flops_per_token=6.0, curriculum_steps=3, curriculum_flops_per_token=2.0)
    tc = ml_collections.ConfigDict({"log_every": 4, "steps": 8})
    host = HostMetrics(tc, compute, checkpointer=None, devices=2, peak=1e3)
    for step in range(1, 5):
        row = host.read(step, {"finite": True, "train/loss": 1.0})
    seconds = 4 * 10 / row["tokens_per_s"]
    flops = 10 * (3 * 2.0 + 1 * 6.0)  # three curriculum steps and one main step
    assert row["tflops_per_s_per_device"] == pytest.approx(flops / seconds / 2 / 1e12, rel=1e-9)
    assert row["mfu"] == pytest.approx(flops / seconds / 2 / 1e3, rel=1e-9)
    assert host.summary({})["tflops_per_s_per_device"] == pytest.approx(row["tflops_per_s_per_device"])


def test_runs_table_shows_rates_only_where_present():
    import pandas as pd

    from memlab.analysis.report import _runs_table

    base = {"family": "lm:attn", "params": 1e6, "flops": 1e12, "status": "completed", "step": 10, "steps": 10}
    runs = pd.DataFrame([{**base, "run": "a", "eval/loss": 1.0}, {**base, "run": "b", "eval/loss": 2.0}])
    assert "MFU" not in "\n".join(_runs_table(runs, "eval/loss"))
    runs["tflops_per_s_per_device"] = [412.3, 1.5]
    runs["mfu"] = [0.4123, None]  # run b on a device without a known peak
    header, _, row_a, row_b = _runs_table(runs, "eval/loss")[2].splitlines()
    assert "| TFLOP/s/device | MFU | wall s |" in header
    assert "| 412 | 41.2% |" in row_a and "| 1.5 | – |" in row_b
