"""The objective curriculum (train.curriculum_steps, train.curriculum_objective): its first steps train exactly what
a run of that mix alone trains, the switch changes the logged terms and the FLOPs per step as the analytic counts
say, a run killed in the curriculum resumes to the uninterrupted numbers, and bad settings are named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from memlab.config import ConfigError
from memlab.sweep.estimate import estimate
from memlab.train.loop import train
from tests.helpers import rollback
from tests.test_memory_model import config, params_of

COPY = "next_token@blank_copy"
CURRICULUM = ["train.steps=6", "train.curriculum_steps=3", f"train.curriculum_objective.{COPY}=1.0"]


def rows_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_rows(run_dir) -> dict[int, dict]:
    return {r["step"]: r for r in rows_of(run_dir) if "train/loss" in r}


@pytest.fixture(scope="module")
def curriculum_run(text_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("curriculum") / "run"
    cfg = config(text_corpus, *CURRICULUM, "train.checkpoint_every=2", "train.xla_flops=True")  # per phase
    return cfg, run_dir, train(cfg, run_dir)


@pytest.mark.slow
def test_the_curriculum_trains_its_mix_then_the_objective(curriculum_run, text_corpus, tmp_path):
    cfg, run_dir, summary = curriculum_run
    rows = train_rows(run_dir)
    terms = {step: {k for k in row if k.startswith("train/loss/")} for step, row in rows.items()}
    assert all(terms[s] == {f"train/loss/{COPY}"} for s in (1, 2, 3))
    assert all(terms[s] == {"train/loss/next_token", f"train/loss/{COPY}"} for s in (4, 5, 6))

    # the reference: a run whose objective is the curriculum's mix, same schedule, seed and data
    alone = config(text_corpus, "train.steps=6", f"objective.{COPY}=1.0", "objective.next_token=0.0")
    train(alone, tmp_path / "alone")
    reference = train_rows(tmp_path / "alone")
    for step in (1, 2, 3):
        assert rows[step]["train/loss"] == reference[step]["train/loss"], step
    assert rows[4]["train/loss"] != reference[4]["train/loss"]

    # FLOPs: the curriculum's steps run one pass (the blank copy), the objective's two
    per_step = summary["tokens_per_example"] * cfg.train.batch_size
    early, late = summary["curriculum_flops_per_token"], summary["flops_per_token"]
    assert early == pytest.approx(late / 2, rel=0.05)
    assert rows[3]["flops"] == pytest.approx(3 * per_step * early)
    assert rows[6]["flops"] == pytest.approx(3 * per_step * (early + late))
    assert summary["curriculum_flops_per_token_xla"] == pytest.approx(summary["flops_per_token_xla"] / 2, rel=0.05)
    est = estimate(cfg)
    assert est["flops"] == pytest.approx(rows[6]["flops"])
    assert est["compute"].steps_for(rows[5]["flops"]) == 5 and est["compute"].steps_for(rows[2]["flops"]) == 2

    # evaluation scores the objective throughout, so the curves compare across the switch
    evals = [r for r in rows_of(run_dir) if "eval/loss" in r]
    assert all(f"eval/accuracy/{COPY}" in r and "eval/accuracy/next_token" in r for r in evals)


@pytest.mark.slow
def test_a_run_killed_in_the_curriculum_resumes_to_the_same_numbers(curriculum_run, tmp_path):
    cfg, run_dir, summary = curriculum_run
    shutil.copytree(run_dir, tmp_path / "killed")
    rollback(tmp_path / "killed", 2)
    resumed = train(cfg, tmp_path / "killed")
    assert resumed["eval/loss"] == summary["eval/loss"]
    want, got = params_of(run_dir), params_of(tmp_path / "killed")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.steps=6", "train.curriculum_steps=6", f"train.curriculum_objective.{COPY}=1"], "train.steps=6"),
        (["train.curriculum_steps=2"], "needs train.curriculum_objective"),
        ([f"train.curriculum_objective.{COPY}=1"], "train.curriculum_steps=0, so it would never train"),
        (["train.curriculum_steps=2", "train.curriculum_objective.next_tokn=1"], "unknown objective"),
        (["train.curriculum_steps=2", "train.curriculum_objective.next_token=-1"], "weights must be >= 0"),
    ],
)
def test_bad_curriculum_settings_are_named(text_corpus, overrides, match):
    with pytest.raises(ConfigError, match=match):
        config(text_corpus, *overrides)
