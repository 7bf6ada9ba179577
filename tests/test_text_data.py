"""Real-text data path: tokenisers, prepare (stdlib, local files, a local Hugging Face dataset), manifest
checks, packing with segment ids, shuffling, resume mid-epoch, host shards, and bits per byte in training."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import numpy as np
import pytest

from memlab.config import ConfigError, load_config
from memlab.data import manifest as mf
from memlab.data.packing import pack
from memlab.data.prepare import prepare
from memlab.data.shards import DOC_STARTS, TOKENS, open_array, read
from memlab.data.sources import open_source, split_of
from memlab.data.tasks.text import Text
from memlab.data.tokenizer import EOS, ByteTokenizer, load_tokenizer
from memlab.errors import DataError
from tests.helpers import ROOT

EXPERIMENT = ROOT / "experiments" / "text_lm.py"
SMALL = [
    "data.seq_len=32",
    "model.d_model=32",
    "model.num_heads=2",
    "train.batch_size=8",
    "train.steps=20",
    "train.warmup_steps=2",
    "train.eval_every=10",
    "train.checkpoint_every=10",
    "train.log_every=5",
    "eval.num_examples=16",
    "eval.batch_size=8",
    "data.num_workers=1",
    "logging.wandb_mode=disabled",
    "logging.progress=False",
]


@pytest.fixture(scope="module")
def stdlib_dir(tmp_path_factory):
    """A small deterministic sample of the standard library, byte-tokenised."""
    out = tmp_path_factory.mktemp("data") / "stdlib"
    prepare("stdlib", out, max_docs=40, validation_fraction=0.2, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """~50 windows of 32 tokens with unique lines, so every window's content is distinct."""
    src = tmp_path_factory.mktemp("corpus")
    for d in range(12):
        (src / f"doc{d:02d}.txt").write_text("".join(f"doc {d} line {i}: é{d * i}\n" for i in range(8)))
    out = src.parent / "tiny"
    prepare(str(src), out, validation_fraction=0.25, progress=False)
    return out


def config(path, *extra):
    return load_config(EXPERIMENT, [f"data.path={path}", *SMALL, *extra])


def split_documents(path, split):
    tokens = read(open_array(path / split / TOKENS), 0, None)
    starts = list(read(open_array(path / split / DOC_STARTS), 0, None)) + [len(tokens)]
    return [tokens[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    for text in ["", "plain ascii", "naïve café ✓ 𝄞 \x00\t\n", "a" * 1000]:
        ids = tok.encode_batch([text])[0]
        assert len(ids) == len(text.encode()) and tok.decode(ids) == text
    assert tok.decode(np.r_[tok.encode_batch(["ab"])[0], tok.eos_id, tok.encode_batch(["c"])[0]]) == f"ab{EOS}c"


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_shards_decode_back_to_the_source_documents(tmp_path, kind):
    out = tmp_path / kind
    prepare(
        "stdlib",
        out,
        tokenizer=kind,
        vocab_size=512,
        tokenizer_sample_mb=0.3,
        max_docs=12,
        validation_fraction=0.3,
        progress=False,
    )
    manifest = mf.load(out)
    info = manifest["tokenizer"]
    assert info["kind"] == kind
    if kind == "bpe":
        assert info["file"] == "tokenizer.json" and info["vocab_size"] == 512
        assert info["sha256"] == mf.sha256_file(out / "tokenizer.json") == manifest["files"]["tokenizer.json"]["sha256"]
    tok = load_tokenizer(info, out)
    docs = [(split_of(k, 0.3), t) for k, t in open_source("stdlib", max_docs=12).documents()]
    for split in ("train", "validation"):
        texts = [t for s, t in docs if s == split]
        stored = split_documents(out, split)
        assert len(stored) == len(texts) == manifest["splits"][split]["documents"] > 0
        assert all(
            ids[-1] == tok.eos_id and tok.decode(ids[:-1]) == text for ids, text in zip(stored, texts, strict=True)
        )
        assert manifest["splits"][split]["bytes"] == sum(len(t.encode()) for t in texts)
        assert manifest["splits"][split]["tokens"] == sum(len(ids) for ids in stored)
    if kind == "bpe":
        assert manifest["splits"]["train"]["tokens"] < manifest["splits"]["train"]["bytes"] / 2


def test_prepare_cli_reports_counts_is_idempotent_and_deterministic(tmp_path, capsys):
    from memlab.cli import main

    args = [
        "data",
        "prepare",
        "--source",
        "stdlib",
        "--max-files",
        "20",
        "--validation-fraction",
        "0.3",
        "--no-progress",
        "--out",
    ]
    assert main([*args, str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert "prepared" in first and "tokens" in first and "bytes" in first and "validation" in first
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    assert main([*args, str(tmp_path / "a")]) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")} == mtimes
    assert main([*args, str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / mf.MANIFEST).read_bytes() == (tmp_path / "b" / mf.MANIFEST).read_bytes()
    assert main(["data", "prepare", "--source", "stdlib", "--max-files", "21", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "differ in max_docs" in err and "--force" in err
    assert main(["data", "prepare", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    assert "is not a file, directory or glob" in capsys.readouterr().err


def test_truncated_or_corrupted_shard_is_detected(stdlib_dir, tmp_path, capsys):
    from memlab.cli import main

    data = tmp_path / "data"
    shutil.copytree(stdlib_dir, data)
    chunk = data / "train" / TOKENS / "c" / "0"
    original = chunk.read_bytes()
    chunk.write_bytes(original[: len(original) // 2])
    with pytest.raises(DataError, match=r"c/0 is truncated: \d+ bytes on disk"):
        mf.verify(data, mf.load(data), "size")
    with pytest.raises(ConfigError, match="truncated"):
        config(data)
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    chunk.write_bytes(bytes(flipped))
    mf.verify(data, mf.load(data), "size")  # same size: only the checksum can tell
    with pytest.raises(DataError, match=r"c/0 is corrupted: its SHA-256 differs"):
        Text(config(data).data, "train", 0)
    assert main(["data", "verify", str(data)]) == 2
    assert "corrupted" in capsys.readouterr().err
    (data / "validation" / DOC_STARTS / "c" / "0").unlink()
    with pytest.raises(DataError, match="is missing"):
        mf.verify(data, mf.load(data), "size", prefix="validation/")
    (data / mf.MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        mf.load(data)
    prepare("stdlib", data, max_docs=40, validation_fraction=0.2, progress=False)  # damaged: rebuilt in place
    mf.verify(data, mf.load(data), "sha256")
    assert mf.load(data) == mf.load(stdlib_dir)


def test_packing_segment_ids_positions_and_mask():
    tokens = np.array([10, 11, 9, 20, 9, 30, 31, 32, 33])  # 9 = EOS; documents start at 0, 3, 5
    ex = pack(tokens, start=100, doc_starts=np.array([0, 98, 103, 105]), mode="segments")
    #   stream offsets 100..108: doc 1 (98..102), doc 2 (103..104), doc 3 (105..)
    np.testing.assert_array_equal(ex["inputs"], tokens[:-1])
    np.testing.assert_array_equal(ex["targets"], tokens[1:])
    np.testing.assert_array_equal(ex["segment_ids"], [1, 1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(ex["positions"], [0, 1, 2, 0, 1, 0, 1, 2])
    np.testing.assert_array_equal(ex["token_mask"], [1, 1, 0, 1, 0, 1, 1, 1])  # no target in the next document
    assert set(pack(tokens, 100, np.array([0]), "concat")) == {"inputs", "targets"}
    with pytest.raises(ValueError, match="choose one of segments, concat"):
        pack(tokens, 100, np.array([0]), "packed")


def test_windows_follow_the_stream_and_documents(stdlib_dir):
    cfg = config(stdlib_dir).data
    src = Text(cfg, "train", seed=0)
    tokens = read(src.tokens, 0, None)
    eos = mf.load(stdlib_dir)["tokenizer"]["eos_id"]
    for index in range(0, 200, 7):
        ex, start = src[index], src.window(index) * cfg.seq_len
        np.testing.assert_array_equal(ex["inputs"], tokens[start : start + cfg.seq_len])
        np.testing.assert_array_equal(ex["targets"], tokens[start + 1 : start + cfg.seq_len + 1])
        new_segment = np.diff(ex["segment_ids"]) == 1
        assert np.all(np.diff(ex["segment_ids"]) >= 0)
        np.testing.assert_array_equal(new_segment, ex["inputs"][:-1] == eos)  # boundaries exactly after EOS
        assert np.all(ex["token_mask"][ex["inputs"] == eos] == 0)


def test_shuffle_is_seeded_and_each_epoch_is_a_permutation(tiny_corpus):
    cfg = config(tiny_corpus).data
    a, b, c = Text(cfg, "train", 0), Text(cfg, "train", 0), Text(cfg, "train", 1)
    n = a.num_windows
    epoch0, epoch1 = [a.window(i) for i in range(n)], [a.window(i) for i in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n)) and epoch0 != epoch1
    assert epoch0 == [b.window(i) for i in range(n)] != [c.window(i) for i in range(n)]
    for i in (0, 5, n + 3):
        for k in a[i]:
            np.testing.assert_array_equal(a[i][k], b[i][k])


def test_resume_mid_epoch_gives_the_same_next_batches(tiny_corpus):
    from memlab.data.pipeline import train_iterator

    cfg = config(tiny_corpus, "train.steps=50")
    windows = Text(cfg.data, "train", 0).num_windows
    assert windows < 8 * 12  # the batches below cross epoch boundaries
    it = train_iterator(cfg)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(9)]
    resumed = train_iterator(cfg)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_host_shards_are_disjoint_and_complete(stdlib_dir, monkeypatch):
    import jax

    from memlab.data import pipeline

    cfg = config(stdlib_dir)
    rows = lambda batches: Counter(r.tobytes() for b in batches for r in b["inputs"])
    it = pipeline.train_iterator(cfg)
    single = rows([next(it) for _ in range(6)])
    assert len(single) == 48  # 48 distinct windows (within the first epoch)
    per_host = []
    for host in range(2):
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda host=host: host)
        it = pipeline.train_iterator(cfg)
        batches = [next(it) for _ in range(6)]
        assert all(b["inputs"].shape == (4, 32) for b in batches)  # half the global batch each
        per_host.append(rows(batches))
    assert not per_host[0] & per_host[1]
    assert per_host[0] + per_host[1] == single


def test_hugging_face_streaming_on_a_local_dataset(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    texts = [f"Once upon a time, story {i} had {i * 7} dragons. Ünïcode ✓\n" * (1 + i % 3) for i in range(60)]
    repo = tmp_path / "tiny_stories"
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": texts, "id": list(range(60))}).to_parquet(
        str(repo / "data" / "train-00000-of-00001.parquet")
    )
    out = tmp_path / "hf"
    done = prepare(f"hf:{repo}", out, max_docs=50, validation_fraction=0.2, progress=False)
    splits = done.manifest["splits"]
    assert splits["train"]["documents"] + splits["validation"]["documents"] == 50
    assert done.manifest["request"]["hf_split"] == "train"
    stored = split_documents(out, "train") + split_documents(out, "validation")
    decoded = sorted(ByteTokenizer().decode(ids[:-1]) for ids in stored)
    assert decoded == sorted(texts[:50])
    with pytest.raises(DataError, match="no field 'body'"):
        prepare(f"hf:{repo}", tmp_path / "bad", text_field="body", progress=False)


def test_local_directory_with_text_and_json_lines(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("first document\n")
    (corpus / "sub" / "b.md").write_text("second document\n")
    (corpus / "rows.jsonl").write_text("\n".join(json.dumps({"body": f"row {i}"}) for i in range(30)) + "\n")
    (corpus / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    (corpus / ".hidden").write_text("never read")
    src = open_source(str(corpus), text_field="body")
    docs = list(src.documents())
    assert [k for k, _ in docs[:3]] == ["a.txt", "rows.jsonl:1", "rows.jsonl:2"] and docs[-1][0] == "sub/b.md"
    assert len(docs) == 32 and src.skipped == Counter({"not UTF-8": 1})
    with pytest.raises(DataError, match="has no field 'text'"):
        list(open_source(str(corpus)).documents())
    assert [k for k, _ in open_source(str(corpus / "**" / "*.md")).documents()] == ["b.md"]
    (corpus / "rows.jsonl").write_bytes(b'{"body": "\xff"}\n')
    with pytest.raises(DataError, match="rows.jsonl:1 is not valid UTF-8 JSON"):
        list(open_source(str(corpus), text_field="body").documents())


def test_config_checks_name_the_fix(stdlib_dir):
    with pytest.raises(ConfigError, match="data.path is empty.*memlab data prepare"):
        load_config(EXPERIMENT, SMALL)
    with pytest.raises(ConfigError, match="create it with `memlab data prepare"):
        config(stdlib_dir / "missing")
    with pytest.raises(ConfigError, match="data.packing='packed' is not accepted"):
        config(stdlib_dir, "data.packing=packed")
    with pytest.raises(ConfigError, match="data.vocab_size=100 is smaller than the 257 ids"):
        config(stdlib_dir, "data.vocab_size=100")
    resolved = config(stdlib_dir)
    assert resolved.data.vocab_size == resolved.model.vocab_size == 257
    assert config(stdlib_dir, "data.vocab_size=320").model.vocab_size == 320


@pytest.mark.slow
def test_text_lm_logs_bits_per_byte(stdlib_dir, tmp_path):
    from memlab.train.loop import train

    summary = train(config(stdlib_dir), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/bits_per_byte" in r]
    assert [r["step"] for r in evals] == [10, 20]
    val = mf.load(stdlib_dir)["splits"]["validation"]
    for r in evals:
        expected = r["eval/loss/next_token"] / math.log(2) * (val["tokens"] - val["documents"]) / val["bytes"]
        assert r["eval/bits_per_byte"] == pytest.approx(expected)
    assert evals[1]["eval/bits_per_byte"] < evals[0]["eval/bits_per_byte"] < 8.1  # ln(257) nats ~ 8 bits
    assert summary["eval/bits_per_byte"] == evals[-1]["eval/bits_per_byte"]
    assert json.loads((tmp_path / "config.json").read_text())["model"]["vocab_size"] == 257
