"""MQAR source: vocabulary halves, distinct keys and values, answer mask, determinism, disjoint splits."""

import numpy as np
import pytest

from memlab.config import load_config
from memlab.data.tasks.mqar import MQAR
from tests.helpers import ROOT


@pytest.fixture
def cfg():
    return load_config(
        ROOT / "experiments" / "mqar.py", ["data.vocab_size=128", "data.seq_len=96", "data.num_kv_pairs=12"]
    ).data


def test_keys_values_and_mask(cfg):
    src = MQAR(cfg, "train", seed=3)
    half, n = cfg.vocab_size // 2, cfg.num_kv_pairs
    for i in range(50):
        ex = src[i]
        inputs, targets, mask = ex["inputs"], ex["targets"], ex["loss_mask"]
        assert inputs.shape == targets.shape == mask.shape == (cfg.seq_len,)
        keys, values = inputs[0 : 2 * n : 2], inputs[1 : 2 * n : 2]
        assert np.all((keys >= 1) & (keys < half)) and np.all((values >= half) & (values < cfg.vocab_size))
        assert len(set(keys)) == n and len(set(values)) == n  # without replacement
        binding = dict(zip(keys.tolist(), values.tolist(), strict=True))
        answer_pos = np.flatnonzero(mask)
        assert len(answer_pos) == n and np.all(answer_pos >= 2 * n)
        for p in answer_pos:  # at a scored position the input is a key and the target its value
            assert binding[int(inputs[p])] == targets[p]
        assert sorted(inputs[answer_pos].tolist()) == sorted(keys.tolist())  # each key queried once
        np.testing.assert_array_equal(inputs[1:], targets[:-1])  # targets are the inputs shifted by one
        others = np.setdiff1d(np.arange(2 * n, cfg.seq_len), np.concatenate([answer_pos, answer_pos + 1]))
        assert np.all(inputs[others] == 0)  # everything else is the filler


def test_gaps_favour_short_distances(cfg):
    """Query slots follow p(slot) ~ slot^(a-1): far more mass near the context than a uniform draw."""
    src = MQAR(cfg, "train", seed=0)
    n = cfg.num_kv_pairs
    slots = (cfg.seq_len + 1 - 2 * n) // 2
    picked = np.concatenate([(np.flatnonzero(src[i]["loss_mask"]) - 2 * n) // 2 for i in range(300)])
    assert picked.min() >= 0 and picked.max() < slots
    near = np.mean(picked < slots // 4)
    assert near > 0.4  # uniform placement without replacement would give about 0.25


def test_pure_function_of_seed_and_index(cfg):
    a, b = MQAR(cfg, "train", seed=1), MQAR(cfg, "train", seed=1)
    for i in (0, 7, 10**6):
        for k in ("inputs", "targets", "loss_mask"):
            np.testing.assert_array_equal(a[i][k], b[i][k])
    assert not np.array_equal(a[0]["inputs"], MQAR(cfg, "train", seed=2)[0]["inputs"])


def test_train_and_eval_disjoint(cfg):
    train, evals = MQAR(cfg, "train", seed=0), MQAR(cfg, "eval", seed=0)
    seen = {train[i]["inputs"].tobytes() for i in range(2000)}
    assert not any(evals[i]["inputs"].tobytes() in seen for i in range(500))
    assert not np.array_equal(train[5]["inputs"], evals[5]["inputs"])
