"""Efficiency analysis from run directories: compute to a target accuracy (interpolated), accuracy at equal
compute, slot/baseline ratios at equal L, and the one-command report with its plots."""

import json
import math
import subprocess

import pandas as pd
import pytest

from memlab.studies.slot_memory.efficiency import compute_to_target, target_bracket, write_efficiency_report
from tests.helpers import ROOT, memlab_cmd


def fake_run(root, name, family, length, slots, flops_per_example, accuracies, *, steps=None, stopped_at=None):
    """A run with eval accuracy after each 10 steps of 4 examples, scheduled for `steps` (default: as many as it
    evaluated); `stopped_at` (a step past the last eval): interrupted there."""
    steps = steps or 10 * len(accuracies)
    run = root / name
    run.mkdir(parents=True)
    config = {
        "model": {"name": family, "num_slots": slots},
        "data": {"context_len": length},
        "train": {"steps": steps, "batch_size": 4},
        "logging": {"run_name": name},
    }
    (run / "config.json").write_text(json.dumps(config))
    rows = [
        {"step": 10 * (i + 1), "flops": 40 * (i + 1) * flops_per_example, "eval/exact_match": a}
        for i, a in enumerate(accuracies)
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    status, step = ("completed", steps) if stopped_at is None else ("interrupted", stopped_at)
    summary = {"status": status, "step": step, "flops": 4 * step * flops_per_example}
    (run / "summary.json").write_text(json.dumps({**summary, "flops_per_example": flops_per_example, "params": 1000}))


def test_compute_to_target_interpolates_in_log_flops():
    curve = pd.DataFrame({"flops": [10.0, 100.0, 1000.0], "eval/exact_match": [0.2, 0.5, 1.0]})
    assert compute_to_target(curve, 0.5) == pytest.approx(100.0)
    assert compute_to_target(curve, 0.75) == pytest.approx(10**2.5)  # halfway between 100 and 1000 in log
    assert compute_to_target(curve, 0.1) == pytest.approx(10.0)
    assert math.isnan(compute_to_target(curve, 1.01))
    # the evaluations around the crossing bracket it; never reached: the last evaluation is a floor
    assert target_bracket(curve, 0.75) == pytest.approx((100.0, 10**2.5, 1000.0))
    assert target_bracket(curve, 0.1) == (0.0, 10.0, 10.0)
    low, estimate, high = target_bracket(curve, 1.01)
    assert low == 1000.0 and math.isnan(estimate) and math.isnan(high)


def test_report_gives_the_ratio_at_equal_l(tmp_path):
    fake_run(tmp_path, "slot", "slot_memory", 512, 32, 1.0, [0.3, 0.95, 0.97])
    fake_run(tmp_path, "encdec", "encdec", 512, 32, 10.0, [0.2, 0.5, 0.92])
    # lm: interrupted at step 40, ten steps after its last eval; encdec_short: its schedule ends where the slot's does
    fake_run(tmp_path, "lm", "lm", 512, 32, 20.0, [0.1, 0.2, 0.3], steps=100, stopped_at=40)
    fake_run(tmp_path, "encdec_short", "encdec", 512, 32, 1.0, [0.1, 0.2, 0.4])
    fake_run(tmp_path, "slot_small", "slot_memory", 64, 4, 0.5, [0.9])
    out = subprocess.run(
        memlab_cmd("efficiency", str(tmp_path), "--target", "0.9"), cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert (tmp_path / "accuracy_vs_flops.png").stat().st_size > 0
    assert (tmp_path / "compute_to_target_vs_ratio.png").stat().st_size > 0
    # slot crosses 0.9 at flops 40 * 2 * 1.0 (interpolated between 40 and 80); encdec at 40 * 3 * 10 -> ratio
    slot = math.exp(math.log(40) + (0.6 / 0.65) * (math.log(80) - math.log(40)))
    encdec = math.exp(math.log(800) + (0.4 / 0.42) * (math.log(1200) - math.log(800)))
    # the crossings lie between evals: slot in (40, 80], encdec in (800, 1200] -> ratio in [800/80, 1200/40]
    assert (
        f"vs encdec (encdec): compute-to-target ratio {encdec / slot:.3g} (between evaluations: 10-30), "
        "FLOPs-per-example ratio 10; no equal-compute comparison" in out
    )
    # lm never got there: its last evaluation (40 * 3 * 20 FLOPs) bounds its compute to target from below; the
    # 800 FLOPs it spent after that evaluation say nothing about where it would have crossed
    assert (
        f"vs lm (lm): compute-to-target ratio > {2400 / slot:.3g} (lm below the target at its last evaluation), "
        "FLOPs-per-example ratio 20; no equal-compute comparison" in out
    )
    # equal compute: only the run whose schedule ends at the slot run's budget (120 FLOPs), read at its end
    assert "vs encdec (encdec_short):" in out and "schedules ending at 120 FLOPs: slot 0.970 vs encdec 0.400" in out


def test_efficiency_report_needs_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs"):
        write_efficiency_report(tmp_path)
