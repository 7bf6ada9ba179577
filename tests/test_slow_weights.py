"""Writing facts into a slow block, scoring them, and the write -> save -> cold reload -> query path
(memlab.slow_weights): the write touches the memories only, the scorer tells a leak from recall, the one-shot delta
write stores what it was asked to, and a block queried in a fresh process gives bit-identical logits."""

import json
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.data.facts import Fact, make_facts, probe_rows, write_facts
from memlab.models import build_model
from memlab.models.params import flat_params
from memlab.slow_weights.score import contamination, score, summary
from memlab.slow_weights.write import adam_write, delta_write, memory_names, row_length
from tests.helpers import memlab_cmd
from tests.test_bdh import EXPERIMENT, bdh_config, open_gates

FACTS = make_facts(4, "eval", 0)


class Oracle(nnx.Module):
    """A stand-in model whose logits are one-hot: `leak` reads the next input (what teacher forcing hands it),
    otherwise it knows each fact's answer from the prompt bytes it has seen."""

    def __init__(self, facts, leak=False):
        self.leak = leak
        rows = probe_rows(facts, row_length(facts))
        self.rows = nnx.Variable(jnp.asarray(rows["inputs"]))
        self.starts = nnx.Variable(jnp.asarray(rows["answer_start"]))

    def logits(self, tokens):
        nxt = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
        if self.leak:
            return jax.nn.one_hot(nxt, 257) * 20
        # recall: find the row with the same prompt (same bytes up to its answer start) and copy its next byte
        pos = jnp.arange(tokens.shape[1])
        rows, starts = self.rows[...], self.starts[...]
        same = ((tokens[:, None] == rows[None]) | (pos > starts[None, :, None])).all(-1)
        truth = rows[jnp.argmax(same, axis=1)]
        return jax.nn.one_hot(jnp.pad(truth[:, 1:], ((0, 0), (0, 1))), 257) * 20


def test_the_scorer_tells_a_leak_from_recall():
    recall = summary(score(Oracle(FACTS), FACTS))
    assert recall["tf_exact"] == recall["ar_exact"] == 1.0 and recall["median_p_first"] > 0.99
    leak = summary(score(Oracle(FACTS, leak=True), FACTS))
    assert leak["tf_exact"] == 1.0 and leak["ar_exact"] == 0.0  # teacher forcing hands a leak the answer
    assert contamination(Oracle(FACTS), FACTS[:2], FACTS[2:]) < 1e-3


@pytest.fixture(scope="module")
def slow_model(text_corpus):
    model = build_model(bdh_config(text_corpus, "model.slow_slots=16").model, seed=0)
    open_gates(model)
    model.unembed.kernel[...] = model.unembed.kernel[...] * 100  # untrained logits are ~0: let the residual speak
    return model


def test_adam_write_changes_the_memories_only_and_fits_the_facts(slow_model):
    before = flat_params(nnx.state(slow_model, nnx.Param))
    written, losses = adam_write(slow_model, FACTS, steps=60, lr=0.05)
    after = flat_params(nnx.state(written, nnx.Param))
    assert [n for n in before if not np.array_equal(before[n], after[n])] == ["slow/1/memory"]
    assert losses[-1] < 0.8 * losses[0]
    block, _ = adam_write(slow_model, FACTS, steps=3, lr=0.05, names=memory_names(slow_model, "block"))
    after = flat_params(nnx.state(block, nnx.Param))
    changed = [n for n in before if not np.array_equal(before[n], after[n])]
    assert changed == ["slow/1/address/kernel", "slow/1/gate", "slow/1/memory"]


def document_loss(model, facts):
    from memlab.data.facts import document_rows
    from memlab.objectives import masked_cross_entropy

    rows = {k: jnp.asarray(v) for k, v in document_rows(facts, row_length(facts)).items()}
    return float(masked_cross_entropy(model.logits(rows["inputs"]), rows["targets"], rows["mask"])[0])


@pytest.mark.slow
def test_delta_write_stores_reads_that_lower_the_document_loss(slow_model):
    model = nnx.clone(slow_model)
    before = document_loss(model, FACTS[:2])
    written, losses = delta_write(model, FACTS[:2], read_steps=40)
    assert losses[-1] < 0.8 * losses[0]  # the target reads fit the facts
    assert document_loss(written, FACTS[:2]) < before  # and one delta pass stores enough of them to help


@pytest.mark.slow
def test_write_save_cold_reload_query(text_corpus, tmp_path):
    run = tmp_path / "run"
    settings = ["data.path=" + text_corpus, "model.d_model=16", "model.neuron_multiplier=4", "model.num_layers=2",
                "model.slow_layers=1", "model.slow_slots=8", "data.seq_len=16", "train.steps=4", "train.batch_size=2",
                "train.eval_every=4", "train.checkpoint_every=4", "eval.num_examples=4", "eval.batch_size=2",
                "logging.wandb_mode=disabled", "logging.progress=False"]  # fmt: skip
    train = memlab_cmd("train", str(EXPERIMENT), "--workdir", str(run), *[a for s in settings for a in ("--set", s)])
    subprocess.run(train, check=True, capture_output=True)
    facts = tmp_path / "facts.jsonl"
    write_facts(facts, FACTS)
    block, before, after = tmp_path / "block", tmp_path / "before.npy", tmp_path / "after.npy"
    out = subprocess.run(memlab_cmd("write", str(run), "--facts", str(facts), "--out", str(block), "--steps", "20",
                                    "--logits", str(before)), check=True, capture_output=True, text=True)  # fmt: skip
    assert "wrote 4 facts" in out.stdout
    scores = tmp_path / "scores.json"
    query = memlab_cmd("query", str(run), "--block", str(block), "--facts", str(facts), "--logits", str(after),
                       "--json", str(scores))  # fmt: skip
    subprocess.run(query, check=True, capture_output=True)
    assert np.load(before, allow_pickle=False).tobytes() == np.load(after, allow_pickle=False).tobytes()
    assert [r["answer"] for r in json.loads(scores.read_text())] == [f.answer for f in FACTS]
    out = subprocess.run(memlab_cmd("query", str(run), "--block", str(block), "--prompt", FACTS[0].prompt,
                                    "--tokens", "4"), check=True, capture_output=True, text=True)  # fmt: skip
    assert len(out.stdout.strip()) >= 1
    bad = subprocess.run(memlab_cmd("write", str(run), "--facts", str(tmp_path / "none.jsonl"), "--out", "x"),
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    chunk = next(p for p in block.rglob("*") if p.is_file() and p.name not in ("manifest.json",) and p.stat().st_size)
    chunk.write_bytes(b"\0" + chunk.read_bytes()[1:])  # a corrupted block is refused, not read
    bad = subprocess.run(memlab_cmd("query", str(run), "--block", str(block), "--facts", str(facts)),
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "corrupt" in bad.stderr.lower()


def test_a_run_without_a_slow_block_cannot_be_written(text_corpus):
    from memlab.errors import ConfigError

    model = build_model(bdh_config(text_corpus, "model.slow_layers=''", "model.meta_inner_steps=0").model, 0)
    with pytest.raises(ConfigError, match="no slow block"):
        adam_write(model, [Fact("Bob", "eats", "pie")], steps=1)
