"""Fabricated facts: disjoint pools, determinism, row builders, the facts file, the fact_episodes task and its pass."""

from __future__ import annotations

import json
import shutil

import ml_collections
import numpy as np
import pytest

from memlab import passes
from memlab.cli import main
from memlab.data import facts as fx
from memlab.data import manifest as mf
from memlab.data.tasks.fact_episodes import FactEpisodes
from memlab.data.tokenizer import ByteTokenizer
from memlab.errors import DataError

DECODE = ByteTokenizer().decode


def words(facts):
    return {w.lower() for f in facts for w in (f.subject, f.object)}


def test_pools_are_disjoint_and_lists_have_one_answer_per_prompt():
    train = [f for seed in range(20) for f in fx.make_facts(100, "train", seed)]
    evals = [f for seed in range(20) for f in fx.make_facts(100, "eval", seed)]
    assert not words(train) & words(evals)
    assert {fx.pool_of(w) for w in words(train)} == {"train"} and {fx.pool_of(w) for w in words(evals)} == {"eval"}
    for facts in (fx.make_facts(200, "train", 0), fx.make_facts(200, "eval", 0)):
        assert len({f.subject for f in facts}) == len({f.object for f in facts}) == 200
        assert len({f.prompt for f in facts}) == 200
        assert {f.relation for f in facts} == set(fx.RELATIONS)
        for f in facts:
            assert fx.MIN_WORD <= len(f.object) <= fx.MAX_WORD and len(f.line) <= fx.MAX_LINE
            assert f.line == f"{f.subject} {f.relation} {f.object}.\n" and f.line.startswith(f.prompt + f.answer)
            assert f.object.isalpha() and f.object.islower() and f.subject[0].isupper()


def test_facts_are_a_pure_function_of_pool_and_seed():
    assert fx.make_facts(10, "train", 3) == fx.make_facts(10, "train", 3)
    assert fx.make_facts(10, "train", 3) != fx.make_facts(10, "train", 4)
    assert fx.make_facts(10, "train", 3)[:5] == fx.make_facts(5, "train", 3)  # a longer list extends a shorter
    with pytest.raises(ValueError, match="choose one of train, eval"):
        fx.make_facts(3, "test", 0)


def test_document_rows_are_the_lines_with_next_token_targets():
    facts = fx.make_facts(6, "eval", 1)
    rows = fx.document_rows(facts, 40)
    assert rows["inputs"].shape == rows["mask"].shape == (6, 40)
    assert rows["inputs"].dtype == rows["targets"].dtype == np.int32 and rows["mask"].dtype == np.float32
    for i, f in enumerate(facts):
        n = len(f.line) - 1
        assert DECODE(rows["inputs"][i, :n]) + f.line[-1] == f.line
        assert DECODE(rows["targets"][i, :n]) == f.line[1:]
        np.testing.assert_array_equal(rows["mask"][i], np.arange(40) < n)
        assert not rows["inputs"][i, n:].any() and not rows["targets"][i, n:].any()
    assert fx.document_text(facts) == "".join(f.line for f in facts)
    longest = max(len(f.line) for f in facts) - 1
    fx.document_rows(facts, longest)
    with pytest.raises(ValueError, match=f"needs a row of {longest} tokens"):
        fx.document_rows(facts, longest - 1)


def test_probe_masks_sit_exactly_on_the_answer_targets():
    facts = fx.make_facts(6, "train", 2)
    rows = fx.probe_rows(facts, 32)
    for i, f in enumerate(facts):
        start, size = rows["answer_start"][i], rows["answer_len"][i]
        assert start == len(f.prompt) - 1 and size == len(f.answer.encode())
        n = len(f.prompt) + len(f.answer)
        assert DECODE(rows["inputs"][i, :n]) + "." == f.prompt + f.answer + "."
        assert DECODE(rows["targets"][i, :n]) == (f.prompt + f.answer + ".")[1:]
        on = np.flatnonzero(rows["mask"][i])
        np.testing.assert_array_equal(on, np.arange(start, start + size))
        assert DECODE(rows["targets"][i, on]) == f.answer  # teacher forcing: exactly the answer's bytes
    assert rows["answer_start"].dtype == rows["answer_len"].dtype == np.int32
    with pytest.raises(ValueError, match="too short"):
        fx.probe_rows(facts, 10)


def test_facts_file_round_trip(tmp_path):
    facts = fx.make_facts(7, "eval", 0)
    fx.write_facts(tmp_path / "f.jsonl", facts)
    assert fx.read_facts(tmp_path / "f.jsonl") == facts
    assert (tmp_path / "f.jsonl").read_text().count("\n") == 7


GOOD = '{"subject": "Zorvik", "relation": "eats", "object": "talmenu"}'


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "holds no facts"),
        ("\n\n", "holds no facts"),
        (GOOD + "\n{not json\n", r"f.jsonl:2: not valid JSON"),
        ("[1, 2]\n", r"f.jsonl:1: a line must be a JSON object"),
        ('{"subject": "Zorvik", "relation": "eats"}\n', r"f.jsonl:1: missing key\(s\) object"),
        ('{"subject": "A", "relation": "eats", "object": "b", "note": 1}\n', r"f.jsonl:1: unknown key\(s\) note"),
        ('{"subject": "Zorvik", "relation": "eats", "object": ""}\n', r"f.jsonl:1: object='' must be a non-empty"),
        ('{"subject": "Zorvik", "relation": 3, "object": "x"}\n', r"f.jsonl:1: relation=3 must be a non-empty"),
        ('{"subject": "Zorvik", "relation": "eats", "object": "a\\nb"}\n', "must be on one line"),
        (GOOD + "\n" + GOOD.replace("talmenu", "rasku") + "\n", r"f.jsonl:2: the prompt 'Zorvik eats ' .* line 1"),
    ],
)
def test_bad_facts_files_are_named_with_their_line(tmp_path, text, match):
    (tmp_path / "f.jsonl").write_text(text)
    with pytest.raises(DataError, match=match):
        fx.read_facts(tmp_path / "f.jsonl")


def test_a_missing_facts_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl does not exist; make one with `memlab data facts"):
        fx.read_facts(tmp_path / "nope.jsonl")


def test_cli_writes_a_readable_facts_file(tmp_path, capsys):
    out = tmp_path / "eval.jsonl"
    assert main(["data", "facts", "--n", "5", "--pool", "eval", "--seed", "2", "--out", str(out)]) == 0
    assert fx.read_facts(out) == fx.make_facts(5, "eval", 2)
    assert "wrote 5 eval facts" in capsys.readouterr().out
    assert main(["data", "facts", "--n", "0", "--out", str(out)]) == 2
    assert "--n 0 must be at least 1" in capsys.readouterr().err


def task_config(path, **extra) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(FactEpisodes.defaults())
    cfg.update({"path": path, "seq_len": 16, "facts_per_doc": 3, **extra})
    return cfg


def test_episode_examples_have_their_shapes_and_are_deterministic(text_corpus):
    cfg = task_config(text_corpus)
    shapes = FactEpisodes.example_shapes(cfg)
    assert cfg.vocab_size == 0
    train, again, evals = FactEpisodes(cfg, "train", 0), FactEpisodes(cfg, "train", 0), FactEpisodes(cfg, "eval", 0)
    assert cfg.vocab_size == 257  # resolved to the byte tokeniser's
    assert shapes == {
        **{k: (16,) for k in ("inputs", "targets", "segment_ids", "positions", "token_mask")},
        **{f"episode_doc_{k}": (3, 48) for k in ("inputs", "targets", "mask")},
        **{f"episode_probe_{k}": (3, 32) for k in ("inputs", "targets", "mask")},
    }
    ex = train[5]
    assert {k: v.shape for k, v in ex.items()} == shapes
    assert ex["episode_doc_inputs"].dtype == np.int32 and ex["episode_probe_mask"].dtype == np.float32
    for k in ex:
        np.testing.assert_array_equal(ex[k], again[5][k])
    assert train.facts(5) != train.facts(6) and train.facts(5) != FactEpisodes(cfg, "train", 1).facts(5)
    assert {fx.pool_of(w) for i in range(20) for w in words(evals.facts(i))} == {"eval"}
    assert {fx.pool_of(w) for i in range(20) for w in words(train.facts(i))} == {"train"}
    facts = train.facts(5)
    assert DECODE(ex["episode_doc_inputs"][0][: len(facts[0].line) - 1]) == facts[0].line[:-1]
    np.testing.assert_array_equal(ex["episode_probe_mask"], fx.probe_rows(facts, 32)["mask"])
    concat = task_config(text_corpus, packing="concat")
    assert set(FactEpisodes(concat, "eval", 0)[0]) == set(FactEpisodes.example_shapes(concat))


def test_the_pipeline_batches_episodes_and_counts_the_text_window(text_corpus):
    from memlab.data.pipeline import eval_batches, tokens_per_example
    from memlab.defaults import base_config

    config = base_config("fact_episodes", "lm")
    config.data.update(path=text_corpus, seq_len=16)
    config.eval.update(num_examples=4, batch_size=2)
    assert tokens_per_example(config) == 16
    batches = eval_batches(config)
    assert len(batches) == 2 and batches[0]["episode_probe_inputs"].shape == (2, 8, 32)
    assert batches[1]["episode_doc_mask"].shape == (2, 8, 48) and batches[1]["inputs"].shape == (2, 16)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"facts_per_doc": 0}, r"data.facts_per_doc=0 must be an integer >= 1"),
        ({"doc_len": fx.DOC_ROW_LEN - 1}, rf"data.doc_len={fx.DOC_ROW_LEN - 1} must be an integer >= {fx.DOC_ROW_LEN}"),
        ({"probe_len": 8}, rf"data.probe_len=8 must be an integer >= {fx.PROBE_ROW_LEN}"),
        ({"seq_len": 0}, "data.seq_len=0 must be a positive integer"),
    ],
)
def test_bad_knobs_are_named(text_corpus, extra, match):
    with pytest.raises(ValueError, match=match):
        FactEpisodes.check(task_config(text_corpus, **extra))


def test_a_corpus_of_another_tokeniser_is_refused(text_corpus, tmp_path):
    bpe = tmp_path / "bpe"
    shutil.copytree(text_corpus, bpe)
    manifest = json.loads((bpe / mf.MANIFEST).read_text())
    manifest["tokenizer"]["kind"] = "bpe"
    (bpe / mf.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="prepared with the bpe tokeniser; fact episodes are byte ids"):
        FactEpisodes.check(task_config(str(bpe)))


def test_the_episode_pass_renames_the_episode_and_drops_the_text(text_corpus):
    cfg = task_config(text_corpus)
    shapes = FactEpisodes.example_shapes(cfg)
    assert passes.view_shapes("episode", shapes) == {
        "doc_inputs": (3, 48),
        "doc_targets": (3, 48),
        "doc_mask": (3, 48),
        "inputs": (3, 32),
        "targets": (3, 32),
        "loss_mask": (3, 32),
    }
    ex = FactEpisodes(cfg, "train", 0)[0]
    view = passes.view("episode", {k: v[None] for k, v in ex.items()})
    np.testing.assert_array_equal(view["inputs"][0], ex["episode_probe_inputs"])
    np.testing.assert_array_equal(view["loss_mask"][0], ex["episode_probe_mask"])
    np.testing.assert_array_equal(view["doc_targets"][0], ex["episode_doc_targets"])
    with pytest.raises(ValueError, match="the episode pass needs the fields of a fact episode"):
        passes.view("episode", {"inputs": np.zeros((1, 4), np.int32), "targets": np.zeros((1, 4), np.int32)})
