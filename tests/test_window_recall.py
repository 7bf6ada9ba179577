"""Window recall: fact placement by distance, the answer, determinism, text mixing and filler, knob checks, the
retrieval baseline, exact match, and the config plumbing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from memlab.config import ConfigError, load_config
from memlab.data import pipeline
from memlab.data.shards import TOKENS, open_array, read
from memlab.data.tasks.window_recall import FACT, FACT_LEN, QUERY, WindowRecall, retrieve, retrieve_batch
from memlab.defaults import base_config
from memlab.validation import check
from tests.helpers import ROOT

W, N = 16, 4
T = W * N


def data_config(**knobs):
    c = base_config("window_recall", "lm")
    c.data.update({"window": W, "num_windows": N, "num_facts": 3, **knobs})
    return c


def facts(inputs):
    """{key: (start, value)} of the `FACT key value` spans, found from the tokens alone."""
    return {int(inputs[s + 1]): (int(s), int(inputs[s + 2])) for s in np.flatnonzero(inputs == FACT)}


@pytest.mark.parametrize("distance", [-1, 0, 1, 3])
def test_episode_layout(distance):
    src = WindowRecall(data_config(fact_distance=distance).data, "train", seed=0)
    for i in range(40):
        ex = src[i]
        inputs, targets, mask = ex["inputs"], ex["targets"], ex["loss_mask"]
        assert all(ex[k].shape == (T,) for k in ex) and np.all(ex["token_mask"] == 1)
        np.testing.assert_array_equal(inputs[1:], targets[:-1])
        found = facts(inputs)
        assert len(found) == 3 and len(np.flatnonzero(inputs == FACT)) == 3  # keys distinct
        starts = np.array([s for s, _ in found.values()])
        assert np.all(starts // W == (starts + FACT_LEN - 1) // W)  # never across a window boundary
        windows = starts // W
        if distance == -1:
            assert np.all(windows < N - 1)
        else:
            assert np.all(windows == N - 1 - distance)
            assert np.all(starts + FACT_LEN <= T - 2)  # the question stays whole
        assert np.flatnonzero(mask).tolist() == [T - 1] and inputs[T - 2] == QUERY
        assert targets[T - 1] == found[int(inputs[T - 1])][1]  # the answer is the asked key's value
        taken = np.zeros(T, bool)
        for s in starts:
            taken[s : s + FACT_LEN] = True
        taken[T - 2 :] = True
        assert np.all(inputs[~taken] < 256)  # random filler: bytes only


def test_pure_function_of_seed_stream_and_index():
    cfg = data_config().data
    a, b = WindowRecall(cfg, "train", seed=1), WindowRecall(cfg, "train", seed=1)
    for i in (0, 9, 10**6):
        for k in ("inputs", "targets", "loss_mask"):
            np.testing.assert_array_equal(a[i][k], b[i][k])
    assert not np.array_equal(a[0]["inputs"], WindowRecall(cfg, "eval", seed=1)[0]["inputs"])
    assert not np.array_equal(a[0]["inputs"], WindowRecall(cfg, "train", seed=2)[0]["inputs"])


def test_text_mixing_and_text_filler(text_corpus):
    cfg = data_config(filler="text", text_path=text_corpus, text_fraction=0.5, fact_distance=1).data
    src = WindowRecall(cfg, "train", seed=0)
    stream = read(open_array(f"{text_corpus}/train/{TOKENS}"), 0, None)
    texts = 0
    for i in range(100):
        ex = src[i]
        start = src.text.window(i) * T
        corpus_window = stream[start : start + T]
        if ex["loss_mask"].sum() == 0:
            texts += 1
            np.testing.assert_array_equal(ex["inputs"], corpus_window)
            continue
        filler = np.ones(T, bool)
        for s, _ in facts(ex["inputs"]).values():
            filler[s : s + FACT_LEN] = False
        filler[T - 2 :] = False
        np.testing.assert_array_equal(ex["inputs"][filler], corpus_window[filler])  # the text_corpus, in order
    assert 35 <= texts <= 65


@pytest.mark.parametrize(
    ("knobs", "named"),
    [
        ({"num_facts": 17}, "data.num_facts"),
        ({"num_keys": 2}, "data.num_keys"),
        ({"vocab_size": 300}, "data.vocab_size"),
        ({"fact_distance": N}, "data.fact_distance"),
        ({"fact_distance": -1, "num_windows": 1}, "data.fact_distance"),
        ({"window": 8}, "data.window"),
        ({"filler": "noise"}, "data.filler"),
        ({"text_fraction": 1.5}, "data.text_fraction"),
        ({"filler": "text"}, "data.text_path"),
    ],
)
def test_bad_knobs_name_the_key(knobs, named):
    with pytest.raises(ConfigError, match=named):
        check(data_config(**knobs))


def test_retrieval_brings_the_fact_into_the_last_window():
    src = WindowRecall(data_config(fact_distance=2).data, "eval", seed=0)
    examples = [src[i] for i in range(64)]
    batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
    out = retrieve_batch(batch, W)
    np.testing.assert_array_equal(out["inputs"][:, : T - W], batch["inputs"][:, : T - W])
    np.testing.assert_array_equal(out["targets"][:, -1], batch["targets"][:, -1])
    np.testing.assert_array_equal(out["loss_mask"], batch["loss_mask"])
    np.testing.assert_array_equal(out["inputs"][:, 1:], out["targets"][:, :-1])
    for row in out["inputs"]:
        last = facts(row[T - W :])
        assert int(row[-1]) in last and row[-2] == QUERY  # the asked fact, whole, before the question
    np.testing.assert_array_equal(retrieve(examples[3], W)["inputs"], out["inputs"][3])
    inside = WindowRecall(data_config(fact_distance=0).data, "eval", seed=0)[0]
    np.testing.assert_array_equal(retrieve(inside, W)["inputs"], inside["inputs"])  # nothing to retrieve


def test_exact_match_counts_episodes_only():
    targets = jnp.array([[0, 5], [0, 7], [0, 9]])
    logits = jnp.eye(16)[jnp.array([[0, 5], [0, 1], [0, 9]])]
    mask = jnp.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])  # the last row is text
    got = WindowRecall.eval_metrics({"logits": logits}, {"targets": targets, "loss_mask": mask})
    assert float(got["exact_match"]) == 0.5
    none = WindowRecall.eval_metrics({"logits": logits}, {"targets": targets, "loss_mask": 0 * mask})
    assert float(none["exact_match"]) == 0.0


def test_config_plumbing():
    c = base_config("window_recall", "lm")
    check(c)
    t = c.data.num_windows * c.data.window
    assert pipeline.example_shapes(c)["inputs"] == (t,) and pipeline.tokens_per_example(c) == t
    exp = load_config(ROOT / "experiments" / "window_recall.py")
    assert exp.model.attention_window == exp.data.window and exp.model.attention_window_kind == "block"
