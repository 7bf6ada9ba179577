"""`memlab reproduce delta-mem` end to end on a tiny scale: the backbone and oracle, every adapter kind from the
frozen backbone, the retrieval baseline and the zeroed-state ablation, scored on the same episodes and on text,
into a table and a verdict; the backbone stays bit-identical in every adapter run."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from memlab.models.params import flat_params
from memlab.reproduce.run import reproduce
from memlab.studies.delta_mem import protocol
from memlab.train.checkpoint import load_model

TINY = protocol.Scale(
    window=8,
    windows=3,
    facts=2,
    d_model=32,
    layers=1,
    heads=2,
    backbone_steps=12,
    oracle_steps=12,
    adapter_steps=6,
    batch=8,
    lrs=(1e-2,),
    seeds=(0, 1),
    eval_examples=16,
    fact_counts=(1, 2),
    lr_extensions=0,  # the search's extensions are tested on fabricated runs (tests/test_evidence.py)
)  # 8-token windows hold 2 facts


@pytest.mark.slow
def test_delta_mem_claim_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(protocol.SCALES, "cpu", TINY)
    monkeypatch.setattr(protocol, "_base", _tiny_base(protocol._base))
    result = reproduce("delta-mem", out=tmp_path / "results", workdir=tmp_path / "runs", parallel=2)
    means = result.details["means"]
    assert set(means) == {"backbone", "retrieval", "oracle", "lora", "tsw", "ssw", "msw", "tsw zeroed", "ssw zeroed",
                          "msw zeroed"}  # fmt: skip
    for model, row in means.items():
        assert 0 <= row["beyond"] <= 1 and (row["text"] == "nan" if model == "retrieval" else row["text"] > 0)
    assert means["retrieval"]["params_trainable"] == 0
    assert 0 < means["tsw"]["params_trainable"] < 0.2 * means["tsw"]["params"]
    assert means["msw"]["state_per_layer"] > means["tsw"]["state_per_layer"] > means["backbone"]["state_per_layer"]
    assert means["oracle"]["state_per_layer"] == TINY.windows * means["backbone"]["state_per_layer"]
    assert [p.name for p in result.parts] == [
        "TSW closes the gap",
        "general skills kept",
        "the state, not the adapters",
        "MSW above TSW at many facts",
    ]
    share = next(c for c in result.parts[0].conditions if c.name == "trains <= 2%")
    assert share.decided_by == "configuration"  # the adapter's size, not its training
    zeroed = next(c for c in result.parts[2].conditions if c.name.startswith("zeroed"))
    assert zeroed.decided_by == "construction"  # a zero read reproduces the backbone bit for bit
    assert not any(c.passed for c in result.parts[1].all_checks if c.name.startswith("threshold"))  # memlab's 1%
    assert "beyond-window EM" in result.table and (tmp_path / "results" / "delta-mem.md").exists()

    runs = tmp_path / "runs" / "delta-mem"
    backbone = _params(runs / "backbones" / "model=backbone")
    for run in (p.parent for p in (runs / "seeds").glob("*/config.json")):
        adapted = _params(run)
        shared = [k for k in backbone if k in adapted]
        assert len(shared) == len(backbone)
        for name in shared:
            np.testing.assert_array_equal(adapted[name], backbone[name], err_msg=f"{run.name}: {name}")


def _tiny_base(base):
    def tiny(scale, text):
        return {**base(scale, text), "train.eval_every": 6, "train.checkpoint_every": 12, "train.warmup_steps": 2,
                "logging.wandb_mode": "disabled"}  # fmt: skip

    return tiny


def _params(run_dir) -> dict:
    model, _, _ = load_model(run_dir)
    return {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items()}


def test_scales_fit_their_windows():
    for scale in protocol.SCALES.values():
        assert max(scale.fact_counts) * 3 <= scale.window - 2  # one window holds them all, and the question
        assert dataclasses.replace(scale).windows >= 2
