"""Recurrent decoding: feeding tokens one at a time through LM.decode_step gives the parallel forward's logits."""

import jax
import numpy as np
import pytest
from flax import nnx

from memlab.models import build_model
from tests.helpers import logits_of


@pytest.mark.parametrize(
    "mixers",
    [
        "attn",
        "attn+qkv_conv",
        "conv",
        "gdn",
        "deltanet",
        "hebbian",
        "mlstm",
        "conv,gdn",
        "gdn,attn",
        "gdn+read_before",
        "hebbian+read_before",
        "ttt_linear",
        "titans",
    ],
)
def test_step_by_step_logits_equal_parallel_forward(tiny_config, mixers):
    mixers, _, option = mixers.partition("+")
    cfg = tiny_config(
        f"model.mixers={mixers}",
        f"model.qkv_conv={option == 'qkv_conv'}",
        f"model.matrix_read={'before' if option == 'read_before' else 'after'}",
        "model.matrix_chunk_size=4",
        "model.hebbian_decay=True",
    ).model
    model = build_model(cfg, seed=0)
    tokens = jax.random.randint(jax.random.key(3), (2, 10), 0, cfg.vocab_size)
    parallel = np.asarray(logits_of(model, {"inputs": tokens}))
    step = nnx.jit(lambda m, tok, cache: m.decode_step(tok, cache))
    cache = model.init_cache(2, 12)  # room to spare: unused KV slots must stay masked
    for t in range(tokens.shape[1]):
        logits, cache = step(model, tokens[:, t], cache)
        np.testing.assert_allclose(np.asarray(logits), parallel[:, t], atol=2e-5, rtol=1e-5)
    assert int(cache["pos"]) == tokens.shape[1]


def test_generate_is_greedy_under_the_parallel_forward(tiny_config):
    model = build_model(tiny_config("model.mixers=gdn,attn").model, seed=0)
    prompt = jax.random.randint(jax.random.key(4), (2, 5), 0, 64)
    out = model.generate(prompt, 4)
    assert out.shape == (2, 9)
    np.testing.assert_array_equal(np.asarray(out[:, :5]), np.asarray(prompt))
    logits = logits_of(model, {"inputs": out})
    np.testing.assert_array_equal(np.asarray(out[:, 5:]), np.asarray(logits[:, 4:-1].argmax(-1)))


@pytest.mark.slow
def test_model_loaded_from_a_checkpoint_scores_like_the_run_and_generates(tiny_config, tmp_path, capsys):
    """load_model restores the trained parameters (its eval loss is the run's), and `memlab generate` decodes."""
    from memlab.cli import main
    from memlab.data.pipeline import eval_batches
    from memlab.train.checkpoint import load_model
    from memlab.train.loop import train
    from memlab.train.step import evaluate, make_eval_step

    config = tiny_config("model.mixers=gdn,attn")
    summary = train(config, tmp_path)
    model, loaded_config, step = load_model(tmp_path)
    assert step == config.train.steps and loaded_config.model.mixers == "gdn,attn"
    graphdef, params = nnx.split(model, nnx.Param)
    metrics = evaluate(
        jax.jit(make_eval_step(graphdef, dict(config.objective))), params, eval_batches(config), "answer"
    )
    np.testing.assert_allclose(metrics["eval/loss"], summary["eval/loss"], rtol=1e-6)

    assert main(["generate", str(tmp_path), "--prompt", "3 40 5 41", "--tokens", "3", "--step", "10"]) == 0
    printed = capsys.readouterr().out.split(":")
    assert printed[0] == "step 10" and len(printed[1].split()) == 3
    assert main(["generate", str(tmp_path), "--prompt", "3 999"]) == 2  # outside the vocabulary: one-line error
