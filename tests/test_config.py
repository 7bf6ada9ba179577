"""Config loading: locking, overrides, type and value errors, and the CLI's one-line messages."""

import subprocess

import pytest

from memlab.config import ConfigError, from_dict, load_config, to_dict
from tests.helpers import ROOT, memlab_cmd

MQAR = ROOT / "experiments" / "mqar.py"


def test_overrides_apply_with_types():
    c = load_config(MQAR, ["model.d_model=96", "train.lr=1e-3", "model.mixers=attn,attn", "logging.tags=a,b"])
    assert c.model.d_model == 96 and isinstance(c.model.d_model, int)
    assert c.train.lr == 1e-3
    assert c.model.mixers == "attn,attn"
    assert tuple(c.logging.tags) == ("a", "b")


def test_objective_mix_accepts_registered_losses():
    c = load_config(MQAR, ["objective.next_token=0.5"])
    assert dict(c.objective) == {"answer": 1.0, "next_token": 0.5}


def test_int_to_float_coercion_and_shared_vocab():
    c = load_config(MQAR, ["train.lr=1", "data.vocab_size=128"])
    assert isinstance(c.train.lr, float)
    assert c.model.vocab_size == 128  # model vocab follows the task's


def test_unknown_key_names_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.d_modle'.*model\.d_model"):
        load_config(MQAR, ["model.d_modle=64"])


def test_unknown_group():
    with pytest.raises(ConfigError, match="unknown config key 'modle.d_model'"):
        load_config(MQAR, ["modle.d_model=64"])


def test_wrong_type_names_expected():
    with pytest.raises(ConfigError, match=r"'model.d_model' = 'big' has the wrong type: expected int"):
        load_config(MQAR, ["model.d_model=big"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.schedule=linear", "choose one of cosine, wsd, constant"),
        ("model.mixers=attn,lstm", r"unknown mixer\(s\) \['lstm'\]"),
        ("model.mixers=attn,attn,attn", "lists 3 mixers"),
        ("model.num_heads=3", "must split into"),
        ("train.steps=0", "must be a positive integer"),
        ("data.num_kv_pairs=200", r"data.num_kv_pairs must be in \[1, 31\] for data.vocab_size=64"),
        ("objective.answr=1.0", r"'objective.answr': unknown objective\(s\) \['answr'\]; registered objectives: ans"),
        ("objective.answer@cpy=1.0", r"unknown pass in \['answer@cpy'\] \(after '@'\); registered passes: blank_c"),
        ("objective.answer=-1.0", "weights must be >= 0"),
        ("train.batch_size=10", None),
    ],
)
def test_bad_values_rejected(override, match):
    extra = ["train.grad_accum=4"] if override == "train.batch_size=10" else []
    with pytest.raises(ConfigError, match=match or "divisible by train.grad_accum"):
        load_config(MQAR, [override, *extra])


def test_malformed_override():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(MQAR, ["model.d_model"])


def test_missing_experiment_file(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_config(tmp_path / "nope.py")


def test_roundtrip_through_json():
    c = load_config(MQAR, ["model.d_model=48"])
    again = from_dict(to_dict(c))
    assert to_dict(again) == to_dict(c)
    with pytest.raises(AttributeError):
        again.model.new_key = 1  # locked


def test_cli_error_is_one_line(tmp_path):
    out = subprocess.run(
        memlab_cmd("train", str(MQAR), "--set", "model.d_modle=4", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "did you mean model.d_model" in out.stderr and "Traceback" not in out.stderr
