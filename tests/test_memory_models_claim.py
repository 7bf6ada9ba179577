"""`memlab reproduce memory-models` end to end on a tiny scale: the autoencoder and the causal LM, the four
memory-model conditions at their own learning rates and two seeds, the probes sharing one CE_null, and the three
tables; the curriculum's encoder stays the autoencoder's bit for bit and its copy phase costs less per step."""

import json
from pathlib import Path

import numpy as np
import pytest

from memlab.reproduce.run import reproduce
from memlab.studies.memory_models import protocol
from memlab.studies.memory_models.protocol import COPY, condition_of
from tests.test_memory_model import params_of

TINY = protocol.Scale(
    chunk_len=8,
    num_chunks=4,
    d_model=32,
    heads=2,
    encoder_layers=1,
    decoder_layers=1,
    batch=8,
    autoencoder_steps=12,
    lm_steps=8,
    memory_steps=12,
    curriculum_steps=4,
    copy_weight=0.5,
    lrs=(1e-2,),  # one rate: the search's rounds are tested on fabricated runs (tests/test_evidence.py)
    seeds=(0, 1),
    probe_steps=6,
    eval_every=4,
    eval_examples=16,
    lr_extensions=0,  # the search's extensions are tested on fabricated runs (tests/test_evidence.py)
)


@pytest.mark.slow
def test_memory_models_claim_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(protocol.SCALES, "cpu", TINY)
    result = reproduce("memory-models", out=tmp_path / "results", workdir=tmp_path / "runs", parallel=2)
    assert [p.name for p in result.parts] == [
        "autoencoder rich, causal LM poor",
        "combined memories rich",
        "curriculum saves compute",
    ]
    assert all(p.verdict == "inconclusive" for p in result.parts[1:])  # a 1-value grid never ends interior
    info = result.details["information"]
    kinds = [r["encoder"] for r in info]
    assert kinds[:4] == ["constant", "autoencoder", "causal LM", "untrained"]
    assert kinds.count("memory model, clm") == kinds.count("memory model, combined") == 2  # both seeds
    null = info[0]["ce"]
    assert all(r["ce_null"] == null for r in info)  # one calibration for every probe
    assert info[0]["I_e_calibrated"] == 0.0

    memory = result.details["memory"]
    assert sorted((r["condition"], r["seed"]) for r in memory) == sorted(
        (c, s) for c in protocol.CONDITIONS for s in TINY.seeds
    )
    assert all(0 <= r["copy_hamming"] <= 1 and r["later_chunks_loss"] > 0 for r in memory)
    runs = tmp_path / "runs" / "memory-models"
    lrs = {r["group"]: r["chosen"] for r in result.details["searches"]}
    assert all(r["lr"] == lrs[r["condition"]] for r in memory)  # every seed at its condition's chosen rate
    assert {r["condition"] for r in result.details["curriculum"]} == {"curriculum", "combined"}
    table = (tmp_path / "results" / "memory-models.md").read_text()
    for heading in ("Information by encoder kind", "Memory models", "Training FLOPs to copy Hamming 0.9"):
        assert heading in table
    assert (tmp_path / "results" / "memory-models-copy.png").stat().st_size > 0

    autoencoder = params_of(protocol.autoencoder_dir(runs))
    for run in (p.parent for p in runs.glob("*-curriculum/*/config.json")):
        config = json.loads((run / "config.json").read_text())
        assert condition_of(_flat(config)) == "curriculum"
        after = params_of(run)
        for name in (k for k in after if k.startswith("encoder/")):
            np.testing.assert_array_equal(after[name], autoencoder[name], err_msg=f"{run.name}: {name}")
        summary = json.loads((run / "summary.json").read_text())
        assert summary["curriculum_flops_per_token"] < summary["flops_per_token"]


def _flat(config: dict) -> dict:
    return {
        "train.curriculum_steps": config["train"]["curriculum_steps"],
        "model.memory": config["model"]["memory"],
        f"objective.{COPY}": config["objective"].get(COPY, 0.0),
    }


def _grid(scale) -> list[dict]:
    return [{"@condition": c, "train.lr": lr} for c in protocol.CONDITIONS for lr in scale.lrs]


def test_protocol_stages_expand_with_matched_sizes(text_corpus, tmp_path):
    from memlab.sweep.spec import expand

    text, scale = Path(text_corpus), TINY
    stages = [
        protocol.autoencoder_sweep(scale, text),
        protocol.lm_sweep(scale, text),
        *protocol.memory_sweeps("lr", scale, text, tmp_path, _grid(scale)),
    ]
    assert [s.name for s in stages] == ["autoencoder", "lm", "lr", "lr-curriculum"]
    configs = [p.config for s in stages for p in expand(s)]
    assert {c.model.d_model for c in configs} == {TINY.d_model}
    assert len(configs) == 2 + len(protocol.CONDITIONS) * len(TINY.lrs)
    curriculum = [c for c in configs if c.train.curriculum_steps]
    assert len(curriculum) == len(TINY.lrs)
    for c in curriculum:
        assert c.train.trainable == ("decoder/",) and c.train.init_from.endswith("autoencoder/autoencoder")
