"""`memlab store-capacity` at a tiny size: the three outputs, and the measured orderings that must hold."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from memlab.cli import main
from memlab.store.capacity import crossing, scores


def test_hebbian_and_delta_recall_orthonormal_keys_perfectly_up_to_n_equals_d():
    d, trials = 16, 2
    keys = jnp.asarray(
        np.stack([np.linalg.qr(np.random.default_rng(t).normal(size=(d, d)))[0] for t in range(trials)]), jnp.float32
    )
    values = jnp.asarray(np.random.default_rng(9).normal(size=(trials, d, d)), jnp.float32)
    values = values / jnp.linalg.norm(values, axis=-1, keepdims=True)
    for rule in ("hebbian", "delta"):
        accuracy, cosine = scores(keys, values, jnp.array([4, 8, 16]), rule=rule, passes=1, beta=1.0)
        np.testing.assert_array_equal(np.asarray(accuracy), 1.0)
        np.testing.assert_allclose(np.asarray(cosine), 1.0, atol=1e-5)


def test_crossing_interpolates_and_marks_out_of_range():
    ratios = np.array([0.5, 1.0, 2.0])
    assert crossing(ratios, np.array([1.0, 0.8, 0.4]), 0.9) == pytest.approx(0.75)
    assert crossing(ratios, np.array([1.0, 0.95, 0.92]), 0.9) == math.inf
    assert math.isnan(crossing(ratios, np.array([0.5, 0.4, 0.3]), 0.9))


@pytest.mark.slow
def test_command_writes_table_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "cap"
    assert (
        main(
            [
                "store-capacity",
                "--out",
                str(out),
                "--dims",
                "16",
                "--ratios",
                "0.5,1,2",
                "--trials",
                "2",
                "--passes",
                "3",
            ]
        )
        == 0
    )
    assert "| rule | keys | passes | d |" in capsys.readouterr().out
    frame = pd.read_csv(out / "capacity.csv")
    assert len(frame) == 2 * 2 * 3  # rules x key kinds x ratios
    assert (out / "capacity.png").stat().st_size > 10_000
    assert "![accuracy vs N/d](capacity.png)" in (out / "capacity.md").read_text()
    at = frame[frame["n_over_d"] == 0.5].set_index(["rule", "keys"])
    # repeated delta writes recall more faithfully than Hebbian superposition (nearest-value accuracy is 1 for
    # both at this load), and the delta rule copes with correlated keys, which Hebbian recall does not
    assert at.loc[("delta", "random"), "cosine"] > at.loc[("hebbian", "random"), "cosine"] + 0.05
    assert at.loc[("delta", "correlated"), "accuracy"] > at.loc[("hebbian", "correlated"), "accuracy"]


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["store-capacity", "--out", str(tmp_path), "--rules", "delta,oja"]) == 2
    assert "--rules='delta,oja': expected a comma list of delta, hebbian" in capsys.readouterr().err
