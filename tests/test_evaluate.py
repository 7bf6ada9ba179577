"""Scoring a run's checkpoint away from training: the run's own eval set gives its last logged eval exactly;
data, eval and evaluation-time model knobs change what is scored; a transform sees every batch; a task whose
tokens the model cannot embed is refused."""

import json

import numpy as np
import pytest

from memlab.errors import ConfigError
from memlab.train.evaluate import evaluate_run
from memlab.train.loop import train

pytestmark = pytest.mark.slow  # every test scores the checkpoint of a trained gdn run (a fixture of ~25 s)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from memlab.config import load_config
    from tests.helpers import ROOT, TINY

    path = tmp_path_factory.mktemp("evaluated")
    train(load_config(ROOT / "experiments" / "mqar.py", [*TINY, "model.mixers=gdn"]), path)
    return path


def test_own_eval_set_gives_the_logged_eval(run_dir):
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    scores = evaluate_run(run_dir)
    assert scores["eval/loss"] == logged["eval/loss"] and scores["eval/accuracy"] == logged["eval/accuracy"]


def test_changed_knobs_and_transforms(run_dir):
    base = evaluate_run(run_dir)
    harder = evaluate_run(run_dir, ["data.num_kv_pairs=8", "eval.num_examples=64"])
    assert harder["eval/loss"] != base["eval/loss"]
    other_kernel = evaluate_run(run_dir, ["model.matrix_backend=reference"])  # rebuilt model, same parameters
    assert other_kernel["eval/loss"] == pytest.approx(base["eval/loss"], rel=1e-5)
    seen = []

    def blank(batch):
        seen.append(batch["inputs"].shape)
        return {**batch, "inputs": np.zeros_like(batch["inputs"])}

    blanked = evaluate_run(run_dir, transform=blank)
    assert len(seen) == 2 and blanked["eval/loss"] != base["eval/loss"]


def test_tokens_beyond_the_vocabulary_are_refused(run_dir):
    with pytest.raises(ConfigError, match=r"data.vocab_size=128 exceeds the model's vocabulary \(64\)"):
        evaluate_run(run_dir, ["data.vocab_size=128"])
