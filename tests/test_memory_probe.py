"""memlab probe-memory (memlab.probes.memory_info) on encoders of known information. On text of period 13 a window
is fixed by any one of its bytes, so an encoder that tells its last (or penultimate) byte apart holds all of the
window (ln 13 nats): the probe regenerates it (Hamming near 1), while the constant control holds nothing (I_e' = 0
for itself). Also: the probed encoder stays bit-identical, embedding included; an lm run's embedding is its
final-normed hidden state at the penultimate position; memory_info.json has every field; the CLI; clear errors."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab.config import ConfigError, load_config
from memlab.data.prepare import prepare
from memlab.models import build_model
from memlab.models.params import flat_params
from memlab.probes.memory_info import probe_config, probe_memory
from memlab.train.checkpoint import load_model
from memlab.train.loop import train
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # every test reads a trained run (fixtures of 15-45 s)

PERIOD = "abcdefghijklm"
SOURCE = [
    "model.d_model=16",
    "model.num_heads=2",
    "model.qkv_conv=False",
    "train.steps=2",
    "train.warmup_steps=1",
    "train.batch_size=4",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "eval.num_examples=8",
    "eval.batch_size=4",
    "data.num_workers=1",
    "logging.wandb_mode=disabled",
    "logging.progress=False",
]
PROBE = ["eval.num_examples=64", "eval.batch_size=32", "data.num_workers=1"]
FIELDS = {
    "run", "family", "encoder", "summary", "window", "steps", "ce", "ce_null", "I_e", "I_e_calibrated", "hamming",
    "probe_dir", "ce_null_from",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Periodic text: every window of 8 bytes is one of 13, fixed by its last (or penultimate) byte."""
    src = tmp_path_factory.mktemp("periodic")
    for d in range(8):
        (src / f"doc{d}.txt").write_text(PERIOD * 30)
    out = src.parent / "periodic_text"
    prepare(str(src), out, validation_fraction=0.25, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def memory_run(corpus, tmp_path_factory):
    """A memory_model run of 2 steps: its encoder is near its random init, which already tells bytes apart."""
    workdir = tmp_path_factory.mktemp("runs") / "memory"
    overrides = [*SOURCE, f"data.path={corpus}", "data.num_chunks=2", "data.chunk_len=8"]
    train(load_config(ROOT / "experiments" / "memory_model.py", overrides), workdir)
    return workdir


@pytest.fixture(scope="module")
def lm_run(corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "lm"
    train(load_config(ROOT / "experiments" / "text_lm.py", [*SOURCE, f"data.path={corpus}", "data.seq_len=8"]), workdir)
    return workdir


def params_of(run_dir) -> dict[str, np.ndarray]:
    model, _, _ = load_model(run_dir)
    return {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items()}


def test_an_exact_encoding_is_regenerated_and_the_constant_control_holds_nothing(memory_run, tmp_path):
    info = probe_memory(memory_run, steps=200, workdir=tmp_path, overrides=PROBE)
    assert set(info) == FIELDS
    assert json.loads((tmp_path / "memory_info.json").read_text()) == info
    assert (info["family"], info["encoder"], info["summary"], info["window"]) == ("memory_model", "run", "last", 8)
    assert info["hamming"] > 0.9 and info["I_e_calibrated"] > 0.5, info
    assert info["I_e"] == pytest.approx(1 - info["ce"] / math.log(257))  # the byte tokeniser: 256 bytes, EOS

    null = probe_memory(memory_run, "constant", steps=200, workdir=tmp_path, overrides=PROBE)
    assert null["probe_dir"] == info["ce_null_from"]  # the cached control, read back, not trained again
    assert null["ce"] == null["ce_null"] == info["ce_null"] and null["I_e_calibrated"] == 0.0
    assert null["ce_null"] > 2.0 and null["hamming"] < 0.3, null  # byte statistics only: ~ln 13 nats per byte

    run, probe = params_of(memory_run), params_of(info["probe_dir"])
    encoder = [k for k in probe if k.startswith("encoder/")]
    assert "encoder/embed/embedding" in encoder
    for name in encoder:
        np.testing.assert_array_equal(probe[name], run[name], err_msg=name)


def test_an_lm_embedding_is_its_final_normed_penultimate_state(lm_run, tmp_path):
    info = probe_memory(lm_run, steps=3, workdir=tmp_path, overrides=PROBE, ce_null=2.0)
    assert (info["family"], info["summary"], info["ce_null_from"]) == ("lm", "penultimate", "given")
    assert info["I_e_calibrated"] == pytest.approx(1 - info["ce"] / 2.0)
    lm, _, _ = load_model(lm_run)
    probe, _, _ = load_model(info["probe_dir"])
    tokens = jax.random.randint(jax.random.key(0), (3, 8), 0, 256)
    x, positions = lm.embed(tokens), jnp.broadcast_to(jnp.arange(8), tokens.shape)
    for block in lm.blocks:
        x = block(x, positions=positions)
    np.testing.assert_allclose(probe.encoder(tokens), lm.final_norm(x)[:, -2], atol=1e-6)
    before, after = params_of(lm_run), params_of(info["probe_dir"])
    trunk = [k for k in before if k.split("/")[0] in ("embed", "blocks", "final_norm")]
    assert {f"encoder/{k}" for k in trunk} == {k for k in after if k.startswith("encoder/")}
    for name in trunk:
        np.testing.assert_array_equal(after[f"encoder/{name}"], before[name], err_msg=name)


def test_the_untrained_control_through_the_cli(memory_run, tmp_path):
    from memlab.cli import main

    sets = [arg for o in PROBE for arg in ("--set", o)]
    argv = ["probe-memory", str(memory_run), "--encoder", "untrained", "--steps", "3", "--workdir", str(tmp_path)]
    assert main([*argv, "--ce-null", "2.5", *sets]) == 0
    info = json.loads((tmp_path / "memory_info.json").read_text())
    assert (info["encoder"], info["ce_null"], info["steps"]) == ("untrained", 2.5, 3)
    fresh = build_model(probe_config(memory_run, "untrained", 3, PROBE).model, seed=0)
    start = {k: np.asarray(v) for k, v in flat_params(nnx.state(fresh, nnx.Param)).items()}
    probe, run = params_of(info["probe_dir"]), params_of(memory_run)
    for name in (k for k in probe if k.startswith("encoder/")):
        np.testing.assert_array_equal(probe[name], start[name], err_msg=name)  # a fresh encoder, kept frozen
    assert not np.array_equal(probe["encoder/embed/embedding"], run["encoder/embed/embedding"])


def _edited_run(run_dir, tmp_path, edit) -> str:
    """A copy of `run_dir`'s config.json (nothing else) with `edit(config)` applied."""
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


@pytest.mark.parametrize(
    "source, edit, encoder, match",
    [
        ("none", None, "run", "is not a run directory: it has no config.json"),
        ("memory", None, "frozen", "--encoder 'frozen' is not accepted; choose one of run, untrained, constant"),
        (
            "memory",
            lambda c: c["model"].update(name="slot_memory"),
            "run",
            "is a 'slot_memory' run; probe-memory reads the encoder of memory_model, lm runs",
        ),
        ("memory", lambda c: c["data"].update(task="mqar"), "run", "trained on task 'mqar'; probe-memory regenerates"),
        ("lm", lambda c: c["model"].update(mixers="attn,gdn"), "run", "model.mixers='attn,gdn'; only plain attention"),
        ("lm", lambda c: c["model"].update(lora_rank=4), "untrained", "model.lora_rank=4; only plain attention"),
    ],
)
def test_bad_inputs_are_clear_errors(memory_run, lm_run, tmp_path, source, edit, encoder, match):
    run_dir = {"none": tmp_path, "memory": memory_run, "lm": lm_run}[source]
    if edit is not None:
        run_dir = _edited_run(run_dir, tmp_path, edit)
    with pytest.raises(ConfigError, match=match):
        probe_config(run_dir, encoder, 3, PROBE)
    assert not list(tmp_path.glob("probe_memory*"))  # nothing trained or written


def test_the_probed_run_is_left_alone(memory_run, tmp_path):
    """The probe writes only under its workdir: the run's checkpoints and config are read, never changed."""
    files = lambda: {p.relative_to(memory_run): p.stat().st_mtime_ns for p in memory_run.rglob("*") if p.is_file()}
    before = files()
    probe_memory(memory_run, steps=2, workdir=tmp_path, overrides=PROBE, ce_null=2.0)
    assert files() == before
