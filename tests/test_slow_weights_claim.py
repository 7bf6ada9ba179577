"""`memlab reproduce slow-weights` end to end on a tiny scale: both backbones, every condition of the write
through the CLI in fresh processes (bitwise-identical logits after the cold reload), the sequential documents, and
the table and figure of the result; a second invocation reads the measurements back."""

import pytest

from memlab.reproduce.run import reproduce
from memlab.studies.slow_weights import protocol
from memlab.studies.slow_weights.report import CONDITIONS

TINY = protocol.Scale(
    overrides={"model.d_model": 16, "model.neuron_multiplier": 4, "model.num_layers": 2, "model.slow_layers": "1",
               "model.slow_slots": 8, "data.seq_len": 32, "eval.num_examples": 4, "eval.batch_size": 2},
    steps=6,
    batch=2,
    seeds=(0,),
    fact_seeds=(0,),
    facts=4,
    write_steps=4,
    write_lrs=(1e-1,),
    finetune_lrs=(1e-3,),
    eval_every=3,
    lr_extensions=0,  # the search's extensions are tested on in-process scores (tests/test_evidence.py)
)  # fmt: skip


@pytest.mark.slow
def test_slow_weights_claim_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(protocol.SCALES, "cpu", TINY)
    result = reproduce("slow-weights", out=tmp_path / "results", workdir=tmp_path / "runs")
    rows = result.details["rows"]
    assert sorted((r["backbone"], r["condition"]) for r in rows) == sorted(
        (b, c) for b in protocol.BACKBONES for c in CONDITIONS
    )
    writes = [r for r in rows if r["condition"] == "write"]
    assert all(r["reload_identical"] and r["reload_max_abs_diff"] == 0.0 for r in writes)
    assert all(0 <= r["tf_exact"] <= 1 and 0 <= r["ar_exact"] <= 1 and r["facts"] == 4 for r in rows)
    assert len(result.details["sequential"]) == 2
    assert [p.name for p in result.parts] == ["facts recalled after a cold reload", "meta-TTT keeps A after B"]
    reload = next(c for c in result.parts[0].conditions if c.name == "reload bitwise identical")
    assert reload.decided_by == "construction" and reload.holds
    searched = result.details["learning_rates"]["meta/0"]
    assert searched["write"]["tried"] == [1e-1] and not searched["write"]["interior"]
    assert (tmp_path / "results" / "slow-weights.png").stat().st_size > 0
    again = reproduce("slow-weights", out=tmp_path / "results", workdir=tmp_path / "runs")
    assert again.details == result.details
