"""Training part of a model: init from a run, frozen parameters (bit-identical after training, and cheaper, as
both XLA and the analytic count say), configuration errors before compute, and named passes with their
objective weights (weight 0 = the pass absent), down to an objective-mix sweep that expands and runs."""

import json
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memlab import passes
from memlab.data.pipeline import example_shapes
from memlab.errors import ConfigError
from memlab.models import build_model
from memlab.models.params import flat_params
from memlab.sweep.spec import expand, load_sweep
from memlab.train.checkpoint import load_model
from memlab.train.flops import analytic_flops_per_token, xla_flops_per_token
from memlab.train.loop import train
from memlab.train.partial import trainable_names
from memlab.train.step import make_grad_fn
from tests.helpers import ROOT, memlab_cmd

HEAD = ("final_norm", "unembed")


def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def random_batch(cfg, n: int = 4) -> dict:
    shapes = example_shapes(cfg)
    key = jax.random.key(0)
    batch = {k: jax.random.randint(key, (n, *s), 0, cfg.data.vocab_size) for k, s in shapes.items()}
    batch["loss_mask"] = (jnp.arange(shapes["loss_mask"][0]) % 2).astype(jnp.float32) * jnp.ones((n, 1))
    return batch


def params_of(run_dir) -> dict:
    model, _, _ = load_model(run_dir)
    return {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items()}


FREEZES = {
    "head only": HEAD,  # no gradient reaches the blocks: they run forward only
    "last block and head": ("blocks/1/", *HEAD),  # the first block: forward only
    "embedding only": ("embed",),  # every later stage: forward plus activation backward, no weight gradients
}


@pytest.mark.parametrize("patterns", FREEZES.values(), ids=FREEZES)
def test_freezing_cuts_xla_and_analytic_flops_alike(tiny_config, patterns):
    cfg = tiny_config()
    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    shapes, batch, weights = example_shapes(cfg), random_batch(cfg), dict(cfg.objective)
    tokens = shapes["inputs"][0]
    names = trainable_names(params, patterns)
    analytic = [analytic_flops_per_token(model, shapes, tokens, t) for t in (None, names)]
    xla = [xla_flops_per_token(make_grad_fn(graphdef, weights, t), params, batch, tokens) for t in (None, names)]
    assert xla[1] < 0.9 * xla[0], xla  # XLA really spends less
    assert abs(analytic[1] / analytic[0] - xla[1] / xla[0]) < 0.05, (analytic, xla)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished tiny run (20 steps) to start others from."""
    from memlab.config import load_config
    from tests.helpers import TINY

    run_dir = tmp_path_factory.mktemp("source")
    train(load_config(ROOT / "experiments" / "mqar.py", TINY), run_dir)
    return run_dir


@pytest.mark.slow
def test_fine_tuning_continues_the_curve_and_frozen_parameters_stay(source, tiny_config, tmp_path):
    before = params_of(source)
    last_eval = [r for r in rows(source) if "eval/loss" in r][-1]

    xla = "train.xla_flops=True"  # the summaries' XLA counts, compared at the end
    everything = train(tiny_config(f"train.init_from={source}", "train.steps=10", xla), tmp_path / "all")
    first = rows(tmp_path / "all")[0]
    assert first["step"] == 0 and first["flops"] == 0
    assert first["eval/loss"] == last_eval["eval/loss"] and first["eval/accuracy"] == last_eval["eval/accuracy"]
    assert everything["params_trainable"] == everything["params"]

    summary = train(
        tiny_config(f"train.init_from={source}", "train.steps=10", "train.trainable=blocks/1/,final_norm,unembed", xla),
        tmp_path / "part",
    )
    assert rows(tmp_path / "part")[0]["eval/loss"] == last_eval["eval/loss"]
    after = params_of(tmp_path / "part")
    trained = {k for k in after if k.startswith(("blocks/1/", *HEAD))}
    assert summary["params_trainable"] == sum(after[k].size for k in trained)
    for name, value in after.items():
        if name in trained:
            assert not np.array_equal(value, before[name]), name
        else:
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert summary["flops_per_token"] < everything["flops_per_token"]
    assert summary["flops_per_token_xla"] < everything["flops_per_token_xla"]


@pytest.mark.slow
def test_init_map_places_a_block_elsewhere(source, tiny_config, tmp_path):
    kept = "embed,blocks/0/,blocks/1/,final_norm,unembed"  # all but the new third block train
    train(
        tiny_config(
            "model.num_layers=3",
            f"train.init_from={source}",
            "train.init_map=blocks/1->blocks/2",
            f"train.trainable={kept}",
            "train.steps=2",
        ),
        tmp_path / "mapped",
    )
    old, new = params_of(source), params_of(tmp_path / "mapped")
    moved = [k for k in old if k.startswith("blocks/1/")]
    assert moved
    for name in moved:
        np.testing.assert_array_equal(new[name.replace("blocks/1/", "blocks/2/")], old[name])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (("train.trainable=blocks/7/",), r"'blocks/7/' matches no parameter path .* start with: blocks, embed"),
        (("train.trainable=blocks/(",), "is not a regular expression"),
        (("train.init_from={missing}",), "is not a run directory"),
        (("train.init_from={source}", "train.init_step=3"), r"has no checkpoint at step 3; saved steps: \[10, 20\]"),
        (("train.init_from={source}", "train.init_map=blocks/0"), "is not of the form 'old/prefix->new/prefix'"),
        (("train.init_from={source}", "train.init_map=blocks/0->blocks/9"), "'blocks/9' matches no parameter of th"),
        (("train.init_from={source}", "train.init_map=mixer->blocks/0"), "'mixer' matches no parameter of the sour"),
        (("train.init_from={source}", "model.d_model=64"), r"shapes differ: blocks/0/mixer/k/kernel \(64, 64\) <- \("),
        (("train.init_from={source}", "model.num_layers=3"), r"has no parameter\(s\) \['blocks/2/"),
    ],
)
def test_bad_partial_training_fails_before_compute(source, tiny_config, tmp_path, overrides, match):
    cfg = tiny_config(*(o.format(source=source, missing=tmp_path / "nope") for o in overrides))
    with pytest.raises(ConfigError, match=match):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_copy_pass_repeats_the_first_half():
    inputs = jnp.arange(1, 11)[None]  # tokens 1..10, targets 2..11
    view = passes.view("copy", {"inputs": inputs, "targets": inputs + 1, "segment_ids": jnp.zeros_like(inputs)})
    assert view["inputs"].tolist() == [[1, 2, 3, 4, 5, 1, 2, 3, 4, 5]]
    assert view["targets"].tolist() == [[2, 3, 4, 5, 1, 2, 3, 4, 5, 6]]
    assert view["token_mask"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    assert "segment_ids" not in view
    scored = np.nonzero(np.asarray(view["token_mask"][0])[:-1])[0]
    np.testing.assert_array_equal(view["targets"][0, scored], view["inputs"][0, scored + 1])  # teacher-forced


@pytest.mark.slow
def test_a_pass_at_weight_zero_is_the_pass_absent(tiny_config):
    cfg = tiny_config()
    graphdef, params = nnx.split(build_model(cfg.model, seed=0), nnx.Param)
    batch = random_batch(cfg)
    (loss, terms), grads = make_grad_fn(graphdef, {"answer": 1.0})(params, batch)
    (loss0, terms0), grads0 = make_grad_fn(graphdef, {"answer": 1.0, "next_token@copy": 0.0})(params, batch)
    assert float(loss) == float(loss0) and terms.keys() == terms0.keys()
    jax.tree.map(np.testing.assert_array_equal, grads, grads0)
    (mixed, terms_mixed), _ = make_grad_fn(graphdef, {"answer": 1.0, "next_token@copy": 0.5})(params, batch)
    assert float(mixed) == pytest.approx(float(loss) + 0.5 * float(terms_mixed["loss/next_token@copy"]), rel=1e-6)


def test_each_pass_is_counted_once(tiny_config):
    cfg = tiny_config()
    model = build_model(cfg.model, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    shapes, batch = example_shapes(cfg), random_batch(cfg)
    tokens = shapes["inputs"][0]
    mixes = [{"answer": 1.0}, {"answer": 1.0, "next_token@copy": 0.0}, {"answer": 1.0, "next_token@copy": 0.5}]
    analytic = [analytic_flops_per_token(model, shapes, tokens, weights=w) for w in mixes]
    xla = [xla_flops_per_token(make_grad_fn(graphdef, w), params, batch, tokens) for w in mixes]
    assert analytic[0] == analytic[1] and analytic[2] == 2 * analytic[0]
    assert xla[0] == xla[1] and abs(xla[2] / xla[0] - 2) < 0.05, xla
    # one pass, two objectives on it: still one forward
    both = {"answer@copy": 1.0, "next_token@copy": 1.0}
    assert xla_flops_per_token(make_grad_fn(graphdef, both), params, batch, tokens) == pytest.approx(xla[0], rel=0.05)


@pytest.mark.slow
def test_objective_mix_sweep_expands_and_runs(tmp_path):
    assert len(expand(load_sweep(ROOT / "sweeps" / "objective_mix.py"))) == 6
    tiny = {
        "train.steps": 4,
        "train.eval_every": 2,
        "train.checkpoint_every": 4,
        "train.log_every": 2,
        "train.warmup_steps": 1,
        "train.batch_size": 8,
        "eval.num_examples": 32,
        "eval.batch_size": 16,
        "logging.wandb_mode": "disabled",
    }
    path = tmp_path / "mix.py"
    path.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'sweeps')!r})\n"
        "from objective_mix import objective_mix_sweep\n"
        f"def get_sweep():\n    return objective_mix_sweep(d_models=[16], name='mix', **{tiny!r})\n"
    )
    assert sorted(p.config.objective["next_token@copy"] for p in expand(load_sweep(path))) == [0.0, 0.25, 1.0]
    out = subprocess.run(
        memlab_cmd("sweep", str(path), "--workdir", str(tmp_path / "runs")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    logged = {}
    for run in sorted((tmp_path / "runs").iterdir()):
        if (run / "metrics.jsonl").exists():
            logged[run.name] = {k for k in rows(run)[-1] if k.startswith("train/loss/")}
    assert logged == {
        "next_token@copy=0": {"train/loss/answer"},
        "next_token@copy=0.25": {"train/loss/answer", "train/loss/next_token@copy"},
        "next_token@copy=1": {"train/loss/answer", "train/loss/next_token@copy"},
    }
