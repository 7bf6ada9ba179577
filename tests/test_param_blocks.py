"""Parameter blocks (memlab.train.param_blocks): a sub-tree saved as a verified snapshot and placed onto another
model bit for bit, in place or under another prefix, also from a fresh process onto a run directory's model; a
corrupted block, or one that does not fit its target, is an error that leaves the model unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from memlab.errors import ConfigError, CorruptStoreError, StoreError
from tests.helpers import ROOT

MIXER = "blocks/1/mixer"


def tiny_model(seed: int, d_model: int = 16):
    from memlab.defaults import base_config
    from memlab.models import build_model

    model = base_config("mqar", "lm").model
    model.update(d_model=d_model, num_heads=2, num_layers=2, vocab_size=32)
    return build_model(model, seed)


def params_of(model, prefix: str = "") -> dict[str, np.ndarray]:
    from flax import nnx

    from memlab.models.params import flat_params, under

    return {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items() if under(k, prefix)}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


def relative(params: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1 :]: v for k, v in params.items()}


def test_round_trip_places_the_block_and_changes_nothing_else(tmp_path):
    from memlab.train.param_blocks import apply_block, load_block, save_block

    a, b, c = tiny_model(0), tiny_model(1), tiny_model(2)
    saved = save_block(a, MIXER, tmp_path / "block", meta={"note": "from a"})
    assert sorted(saved) == ["k/kernel", "o/kernel", "q/kernel", "v/kernel"]
    block, manifest = load_block(tmp_path / "block")
    assert (manifest["prefix"], manifest["source"]) == (MIXER, {"note": "from a"})
    assert_same(block, relative(params_of(a, MIXER), MIXER))

    before = params_of(b)
    assert apply_block(b, tmp_path / "block") == MIXER
    after = params_of(b)
    assert_same(params_of(b, MIXER), params_of(a, MIXER))
    assert_same(
        {k: v for k, v in after.items() if not k.startswith(MIXER)},
        {k: v for k, v in before.items() if not k.startswith(MIXER)},
    )
    assert not np.array_equal(before[f"{MIXER}/q/kernel"], after[f"{MIXER}/q/kernel"])

    apply_block(c, tmp_path / "block", prefix="blocks/0/mixer/")  # another layer: the same arrays land there
    assert_same(relative(params_of(c, "blocks/0/mixer"), "blocks/0/mixer"), block)
    assert_same(params_of(c, MIXER), params_of(tiny_model(2), MIXER))


def test_bfloat16_parameters_round_trip_exactly_and_keep_their_dtype(tmp_path):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from memlab.train.param_blocks import apply_block, load_block, save_block

    def to_bf16(model):
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(model, nnx.Param)))
        return model

    a, b = to_bf16(tiny_model(0)), to_bf16(tiny_model(1))
    save_block(a, "blocks/0/mlp", tmp_path / "mlp")
    block, manifest = load_block(tmp_path / "mlp")
    assert {v["dtype"] for v in manifest["arrays"].values()} == {"bfloat16"}
    apply_block(b, tmp_path / "mlp")
    assert_same(params_of(b, "blocks/0/mlp"), params_of(a, "blocks/0/mlp"))
    assert params_of(b)["blocks/0/mlp/up/kernel"].dtype == jnp.bfloat16

    f32 = tiny_model(1)
    with pytest.raises(
        ConfigError, match=r"blocks/0/mlp/up/kernel \(block \[16, 64\] bfloat16, model \[16, 64\] float32"
    ):
        apply_block(f32, tmp_path / "mlp")
    assert_same(params_of(f32), params_of(tiny_model(1)))


def test_a_prefix_that_matches_nothing_names_the_nearest_sub_trees(tmp_path):
    from memlab.train.param_blocks import save_block

    with pytest.raises(
        ConfigError, match=r"'blocks/7/mixer' matches no parameter; accepted sub-trees: \['blocks/0', 'blocks/1'\]"
    ):
        save_block(tiny_model(0), "blocks/7/mixer", tmp_path / "x")
    with pytest.raises(ConfigError, match=r"'block' .* \['blocks', 'embed', 'final_norm', 'unembed'\]"):
        save_block(tiny_model(0), "block", tmp_path / "x")  # whole components only: 'block' is not 'blocks'
    assert not (tmp_path / "x").exists()


@pytest.fixture
def saved(tmp_path):
    from memlab.train.param_blocks import save_block

    save_block(tiny_model(0), MIXER, tmp_path)
    return tmp_path


def _flip_byte(path, offset: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["snapshot-1/blocks.1.mixer.q.kernel.zarr/0.0", "manifest.json"])
def test_a_flipped_byte_is_an_error(saved, target):
    from memlab.train.param_blocks import apply_block

    _flip_byte(saved / target)
    model = tiny_model(1)
    with pytest.raises(CorruptStoreError, match="corrupted"):
        apply_block(model, saved)
    assert_same(params_of(model), params_of(tiny_model(1)))


def _edit_manifest(directory, edit, redigest: bool) -> None:
    """Change manifest.json; with `redigest`, as a forger would, with a matching self-digest."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if redigest:
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        manifest["manifest_sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    path.write_text(json.dumps(manifest))


def test_an_edited_manifest_or_a_missing_file_is_an_error(saved):
    from memlab.train.param_blocks import load_block

    (saved / "snapshot-1" / "blocks.1.mixer.k.kernel.zarr" / "0.0").unlink()
    with pytest.raises(CorruptStoreError, match="missing"):
        load_block(saved)
    _edit_manifest(saved, lambda m: m.update(prefix="blocks/0/mixer"), redigest=False)
    with pytest.raises(CorruptStoreError, match="do not match its own SHA-256"):
        load_block(saved)
    with pytest.raises(StoreError, match="manifest.json is missing"):
        load_block(saved / "nowhere")


@pytest.mark.parametrize(
    "edit, error",
    [
        (lambda m: m["files"].update({"../../outside": {"bytes": 1, "sha256": "0"}}), "would leave the snapshot"),
        (lambda m: m["arrays"][f"{MIXER}/q/kernel"].update(file="../q.zarr"), "is not a plain file name"),
        (lambda m: m.update(generation="1/../../x"), "is not an integer"),
        (lambda m: m.update(prefix="blocks/0/mlp"), "lie outside its prefix"),
    ],
    ids=["file-path", "array-file", "generation", "prefix"],
)
def test_a_forged_manifest_never_reads_outside_the_block(saved, edit, error):
    from memlab.train.param_blocks import load_block

    _edit_manifest(saved, edit, redigest=True)
    with pytest.raises(CorruptStoreError, match=error):
        load_block(saved)


@pytest.mark.parametrize("case", ["d_model", "prefix"])
def test_a_block_that_does_not_fit_is_an_error_naming_the_paths_and_changes_nothing(saved, case):
    from memlab.train.param_blocks import apply_block

    if case == "d_model":
        model, prefix = tiny_model(1, d_model=32), None
        want = rf"shape or dtype differs: {MIXER}/k/kernel \(block \[16, 16\] float32, model \[32, 32\] float32\)"
    else:
        model, prefix = tiny_model(1), "blocks/1/mlp"
        want = (
            r"missing from the block: blocks/1/mlp/down/kernel, blocks/1/mlp/gate/kernel, blocks/1/mlp/up/kernel; "
            r"not in the model: blocks/1/mlp/k/kernel, blocks/1/mlp/o/kernel"
        )
    before = params_of(model)
    with pytest.raises(ConfigError, match=want):
        apply_block(model, saved, prefix)
    assert_same(params_of(model), before)


@pytest.mark.slow
def test_a_fresh_process_places_a_block_onto_a_run_directory(tiny_config, tmp_path, capsys):
    """`memlab params save` from one run's checkpoint; a new Python process loads the run's model with the
    block placed onto another layer; `memlab params load --eval` scores the run's eval set before and after."""
    from memlab.cli import main
    from memlab.train.checkpoint import load_model
    from memlab.train.loop import train

    run = tmp_path / "run"
    train(tiny_config("train.steps=2", "train.warmup_steps=1", "train.checkpoint_every=2", "train.eval_every=2"), run)
    assert main(["params", "save", str(run), "--prefix", MIXER, "--out", str(tmp_path / "block")]) == 0
    assert f"saved '{MIXER}' of {run} step 2" in capsys.readouterr().out
    source = params_of(load_model(run)[0], MIXER)

    script = (
        "import sys, numpy as np\n"
        "from flax import nnx\n"
        "from memlab.models.params import flat_params, under\n"
        "from memlab.train.param_blocks import load_model_with_block\n"
        "model, config, step, prefix = load_model_with_block(sys.argv[1], sys.argv[2], 'blocks/0/mixer')\n"
        "params = flat_params(nnx.state(model, nnx.Param))\n"
        "np.savez(sys.argv[3], **{k.replace('/', '.'): np.asarray(v) for k, v in params.items() if under(k, prefix)})\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(run), str(tmp_path / "block"), str(tmp_path / "placed.npz")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    placed = {k.replace(".", "/"): v for k, v in np.load(tmp_path / "placed.npz").items()}
    assert_same(relative(placed, "blocks/0/mixer"), relative(source, MIXER))

    assert (
        main(["params", "load", str(run), "--block", str(tmp_path / "block"), "--prefix", "blocks/0/mixer", "--eval"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "placed block" in printed and "eval/loss:" in printed and " before, " in printed
    assert main(["params", "load", str(run), "--block", str(tmp_path / "block"), "--prefix", "blocks/1/mlp"]) == 2
