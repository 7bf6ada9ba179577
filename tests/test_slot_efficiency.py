"""Efficiency analysis from run directories: compute to a target accuracy (interpolated), accuracy at equal
compute, slot/baseline ratios at equal L, and the one-command report with its plots."""

import json
import math
import subprocess

import pandas as pd
import pytest

from memlab.studies.slot_memory.efficiency import accuracy_at_compute, compute_to_target, write_efficiency_report
from memlab.sweep import load_sweep
from memlab.sweep.spec import expand
from tests.helpers import ROOT, memlab_cmd


def fake_run(root, name, family, length, slots, flops_per_example, accuracies):
    """A finished run: eval accuracy after each 10 steps of 4 examples."""
    run = root / name
    run.mkdir(parents=True)
    config = {
        "model": {"name": family, "num_slots": slots},
        "data": {"context_len": length},
        "logging": {"run_name": name},
    }
    (run / "config.json").write_text(json.dumps(config))
    rows = [
        {"step": 10 * (i + 1), "flops": 40 * (i + 1) * flops_per_example, "eval/accuracy": a}
        for i, a in enumerate(accuracies)
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "summary.json").write_text(
        json.dumps(
            {"status": "completed", "flops_per_example": flops_per_example, "flops": rows[-1]["flops"], "params": 1000}
        )
    )


def test_compute_to_target_interpolates_in_log_flops():
    curve = pd.DataFrame({"flops": [10.0, 100.0, 1000.0], "eval/accuracy": [0.2, 0.5, 1.0]})
    assert compute_to_target(curve, 0.5) == pytest.approx(100.0)
    assert compute_to_target(curve, 0.75) == pytest.approx(10**2.5)  # halfway between 100 and 1000 in log
    assert compute_to_target(curve, 0.1) == pytest.approx(10.0)
    assert math.isnan(compute_to_target(curve, 1.01))
    assert accuracy_at_compute(curve, 500.0) == 0.5 and math.isnan(accuracy_at_compute(curve, 5.0))


def test_report_gives_the_ratio_at_equal_l(tmp_path):
    fake_run(tmp_path, "slot", "slot_memory", 512, 32, 1.0, [0.3, 0.95, 0.97])
    fake_run(tmp_path, "encdec", "encdec", 512, 32, 10.0, [0.2, 0.5, 0.92])
    fake_run(tmp_path, "lm", "lm", 512, 32, 20.0, [0.1, 0.2, 0.3])
    fake_run(tmp_path, "slot_small", "slot_memory", 64, 4, 0.5, [0.9])
    out = subprocess.run(
        memlab_cmd("efficiency", str(tmp_path), "--target", "0.9"), cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert (tmp_path / "accuracy_vs_flops.png").stat().st_size > 0
    assert (tmp_path / "compute_to_target_vs_ratio.png").stat().st_size > 0
    # slot crosses 0.9 at flops 40 * 2 * 1.0 (interpolated between 40 and 80); encdec at 40 * 3 * 10 -> ratio
    slot = math.exp(math.log(40) + (0.6 / 0.65) * (math.log(80) - math.log(40)))
    encdec = math.exp(math.log(800) + (0.4 / 0.42) * (math.log(1200) - math.log(800)))
    assert f"vs encdec: compute-to-target ratio {encdec / slot:.3g}, FLOPs-per-example ratio 10" in out
    # lm never got there: all it spent (40 * 3 * 20 FLOPs) bounds its compute to target from below
    assert (
        f"vs lm: compute-to-target ratio > {2400 / slot:.3g} (lm not at the target after all its compute), "
        "FLOPs-per-example ratio 20" in out
    )
    # equal compute: the slot run spent 120 FLOPs in all; encdec had reached nothing by then
    assert "at 120 FLOPs: slot 0.970 vs encdec nan" in out


def test_efficiency_report_needs_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs"):
        write_efficiency_report(tmp_path)


def test_sweep_derives_l_from_k_and_ratio():
    points = expand(load_sweep(ROOT / "sweeps" / "slot_efficiency.py"))
    slots = [p.config for p in points if p.config.model.name == "slot_memory"]
    assert len(slots) == 20 and {(c.model.num_slots, c.data.context_len // c.model.num_slots) for c in slots} == {
        (k, r) for k in (4, 8, 16, 32, 64) for r in (4, 8, 16, 32)
    }
    baselines = {(p.config.model.name, p.config.data.context_len) for p in points} - {("slot_memory", None)}
    assert ("encdec", 512) in baselines and ("lm", 2048) in baselines
    assert {c.model.num_layers for c in slots} == {1}
