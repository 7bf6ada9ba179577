"""Fit diagnostics: a law is only a law when its points identify it.

Synthetic points with a known shape: a clean power law with noise must pass; a step (phase transition), too few
points, a flat family and an accuracy column must not be reported or drawn as laws.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_sweep import write_run, write_sweep  # noqa: E402

from memlab.analysis import fit_power_law, load_runs, write_report  # noqa: E402
from memlab.analysis.fits.diagnostics import diagnose_power_law, phase_transition  # noqa: E402
from memlab.analysis.laws import Law, diagnostics_table, fit_laws, is_accuracy  # noqa: E402
from memlab.analysis.plots import _numeric_ticks, draw_laws, draw_vs_compute, family_colors  # noqa: E402


def _diagnose(x, y):
    fit = fit_power_law(x, y, bootstrap=0)
    return fit, diagnose_power_law(x, y, fit, bootstrap=200, seed=0)


@pytest.mark.slow
def test_clean_power_law_with_noise_is_identified():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e9, 1e15, 8)  # FLOP-like x: A at x = 1 is far outside the data
    y = (1.5 + 1e4 * x**-0.35) * np.exp(rng.normal(0, 0.02, x.size))
    _, d = _diagnose(x, y)
    assert d.identified, d.reasons
    assert d.n_points == 8 and d.n_params == 3 and d.bootstrap == 200
    assert d.r2_log > 0.95 and d.residual_rms < 0.05
    lo, hi = d.intervals["alpha"]
    assert lo < 0.35 < hi and hi / lo < 2


def test_step_function_is_a_phase_transition_not_a_law():
    """MQAR-like: nothing learnt below a width, solved above it (0.41 → 0.99 between d=48 and d=64)."""
    rng = np.random.default_rng(1)
    x = np.array([16, 24, 32, 48, 64, 96, 128, 192], float)
    loss = np.where(x < 64, 2.4, 0.05) * np.exp(rng.normal(0, 0.01, x.size))
    fit, d = _diagnose(x, loss)
    assert fit is not None and not d.identified
    assert any(r.startswith("phase transition between x=48 and x=64") for r in d.reasons), d.reasons
    accuracy = np.array([0.30, 0.33, 0.38, 0.41, 0.99, 0.99, 0.995, 0.995])
    assert phase_transition(x, accuracy).startswith("phase transition between x=48 and x=64")


def test_smooth_steep_laws_are_not_phase_transitions():
    x = np.geomspace(1e3, 1e9, 6)  # a steep law on a wide grid: the first drop holds most of the change
    assert phase_transition(x, 1.0 + 1e3 * x**-1.0) is None
    assert phase_transition(x, 1e3 * x**-0.5) is None


def test_too_few_points_is_not_identified():
    x = np.geomspace(1e3, 1e6, 4)
    _, d = _diagnose(x, 1.5 + 40 * x**-0.4)
    assert not d.identified
    assert "4 points for 3 parameters (1 degrees of freedom left, needs 2)" in d.reasons


def test_flat_family_is_not_identified():
    rng = np.random.default_rng(3)
    x = np.geomspace(1e3, 1e6, 8)
    _, d = _diagnose(x, 5.545 * np.exp(rng.normal(0, 0.002, x.size)))
    assert not d.identified and any(r.startswith("flat") for r in d.reasons), d.reasons


def test_no_floor_is_a_finding_not_an_unidentified_e():
    x = np.geomspace(1, 1e4, 20)
    fit, d = _diagnose(x, 5.0 * x**-0.5)
    assert fit.E < 1e-3 and d.identified, d.reasons


@pytest.mark.slow
def test_accuracy_columns_are_not_fitted_by_default(tmp_path):
    assert all(map(is_accuracy, ["eval/accuracy", "eval/exact_match", "probe/recall_accuracy"]))
    assert not any(map(is_accuracy, ["eval/loss", "train/loss"]))
    runs = load_runs(write_sweep(tmp_path, mixers=("attn",), noise=0.002))
    laws = fit_laws(runs, loss="eval/accuracy", bootstrap=0, kinds=("compute", "params"))
    assert [law.kind for law in laws] == ["compute", "params"]
    assert all(law.fit is None and law.skipped.startswith("plotted, not fitted") for law in laws)
    fitted = fit_laws(runs, loss="eval/accuracy", fit_accuracy=True, bootstrap=0, kinds=("compute",))
    assert fitted[0].fit is not None and len(fitted[0].points) == 5  # asked for: fitted on the accuracy frontier
    text = write_report(tmp_path, bootstrap=0).read_text()
    assert "eval/accuracy: plotted, not fitted" in text
    assert all(json.loads((tmp_path / "laws.json").read_text())[i]["y"] == "eval/loss" for i in range(2))


@pytest.mark.slow
def test_size_defaults_to_non_embedding_parameters(tmp_path):
    runs = load_runs(write_sweep(tmp_path, mixers=("attn",), noise=0.002))
    (law,) = fit_laws(runs, bootstrap=0, kinds=("params",))
    assert law.x == "params_non_embedding"
    (total,) = fit_laws(runs, bootstrap=0, kinds=("params",), size="params")
    assert total.x == "params" and total.fit.alpha != law.fit.alpha
    with pytest.raises(ValueError, match="size must be one of"):
        fit_laws(runs, size="embedding")
    text = write_report(tmp_path, bootstrap=0, size="params").read_text()
    assert "| non-emb params |" in text and "Model size N counts all parameters" in text


def _step_sweep(root: Path) -> Path:
    """lm:attn obeys its law; lm:gdn's loss collapses between d=64 and d=96 (a phase transition)."""
    write_sweep(root, noise=0.002, mixers=("attn",), d_models=(32, 48, 64, 96, 128, 192))
    for d in (32, 48, 64, 96, 128, 192):
        write_run(root, f"gdn-d{d}", mixer="gdn", d_model=d, noise=0.002, loss_offset=0.0 if d >= 96 else 4.0)
    return root


@pytest.mark.slow
def test_report_lists_an_unidentified_law_with_its_reason_and_draws_no_frontier(tmp_path):
    root = _step_sweep(tmp_path)
    report = write_report(root, bootstrap=50, chinchilla_bootstrap=0)
    text = report.read_text()
    runs = load_runs(root)
    laws = fit_laws(runs, bootstrap=50, kinds=("compute", "params"))
    table = diagnostics_table(laws).set_index(["family", "law"])
    assert table.loc[("lm:attn", "compute"), "identified"], table.loc[("lm:attn", "compute"), "why not"]
    step = table.loc[("lm:gdn", "compute")]
    assert not step["identified"] and "phase transition" in step["why not"]
    assert "### Diagnostics" in text and "| lm:gdn | compute | `flops` | 6 | 3 |" in text
    assert "**Not identified**" in text and "phase transition between x=" in text
    saved = json.loads((root / "laws.json").read_text())
    gdn = next(law for law in saved if law["family"] == "lm:gdn" and law["kind"] == "compute")
    assert gdn["identified"] is False and gdn["diagnostics"]["reasons"] and gdn["diagnostics"]["n_params"] == 3
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    compute = [law for law in laws if law.kind == "compute"]
    drawn = draw_laws(ax, compute, family_colors(["lm:attn", "lm:gdn"]), "frontier")
    assert [law.family for law in drawn] == ["lm:attn"]
    draw_vs_compute(ax, runs, "eval/loss", laws)
    labels = ax.get_legend_handles_labels()[1]
    assert any(lbl.startswith("lm:attn frontier:") for lbl in labels)
    assert not any(lbl.startswith("lm:gdn frontier:") for lbl in labels)
    assert "lm:gdn frontier points, law not identified" in labels  # its points are still shown


def test_unidentified_law_is_not_identified_even_when_fitted():
    law = Law("f", "compute", "flops", "eval/loss", pd.DataFrame({"flops": [1.0], "eval/loss": [1.0]}), fit=object())
    assert not law.identified and law.status == "not diagnosed"


def test_tick_labels_of_a_log_axis_do_not_overlap():
    """State sizes 13152 and 17536 on an axis spanning decades used to print on top of each other."""
    fig = Figure(figsize=(7.5, 4.8))
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = np.array([512, 1024, 4096, 4192, 13152, 17536, 65536, 70000, 262144])
    ax.plot(values, np.arange(len(values)), "o")
    _numeric_ticks(ax, values.astype(float))
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = sorted(
        (t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()),
        key=lambda b: b.x0,
    )
    assert len(boxes) >= 3
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 < right.x0, "tick labels overlap"
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    assert "13152" not in labels  # compact: 13.2k
    # every label names its tick's own value (a compact label that drops a digit would read 1.32k for 13152)
    for tick, label in zip(ax.get_xticks(), [t.get_text() for t in ax.get_xticklabels()], strict=True):
        if label:
            scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(label[-1], 1.0)
            number = float(label[:-1] if scale != 1.0 else label) * scale
            assert abs(number / tick - 1) < 0.01, (label, tick)


def test_report_cli_passes_size_and_fit_accuracy(monkeypatch, tmp_path):
    import argparse

    from memlab.analysis import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    seen = {}
    monkeypatch.setattr("memlab.analysis.write_report", lambda d, **kw: seen.update(kw) or tmp_path / "report.md")
    args = parser.parse_args(["report", str(tmp_path), "--size", "params", "--fit-accuracy"])
    assert args.func(args) == 0 and seen["size"] == "params" and seen["fit_accuracy"] is True
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(tmp_path), "--size", "embedding"])


def _frontier_runs(family: str, flops: np.ndarray, loss: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [f"{family}-{i}" for i in range(len(flops))],
            "family": family,
            "status": "completed",
            "flops": flops,
            "eval/bits_per_byte": loss,
            "eval/loss": loss * 0.7,
        }
    )


def test_a_law_whose_floor_is_not_identified_is_fitted_without_one():
    """Five points over a decade and a half of a pure power law: the saturating law's E is anything from 0 to
    the data, so the law the points support is L = A·C^-α, identified, with α's interval around the truth."""
    rng = np.random.default_rng(3)
    flops = np.geomspace(1e11, 5e12, 5)
    runs = _frontier_runs("lm:attn", flops, 100 * flops**-0.13 * np.exp(rng.normal(0, 0.01, 5)))
    (law,) = fit_laws(runs, kinds=("compute",))
    assert law.y == "eval/bits_per_byte"  # bits per byte, not the tokenizer-dependent loss, when runs have it
    assert law.identified and law.fit.floor is False and law.diagnostics.n_params == 2, law.diagnostics.reasons
    assert "no floor fitted" in law.note and "interval of E" in law.note
    lo, hi = law.fit.ci["alpha"]
    assert lo < 0.13 < hi and hi / lo < 2


def test_family_comparison_reads_the_compute_multiplier_off_the_frontiers():
    """B's frontier is A's shifted by a factor 2 in compute (L_B(C) = L_A(2C)): A needs 2x the compute of B for
    the same loss at every budget."""
    from memlab.analysis.compare import family_comparison
    from memlab.analysis.fits import fit_pure_power_law

    flops = np.geomspace(1e11, 1e13, 6)
    laws = []
    for family, shift in (("a", 1.0), ("b", 2.0)):
        runs = _frontier_runs(family, flops, 100 * (shift * flops) ** -0.13)
        laws.append(Law(family, "compute", "flops", "eval/bits_per_byte", runs))
        laws[-1].fit = fit_pure_power_law(flops, runs["eval/bits_per_byte"].to_numpy(), bootstrap=50)
        laws[-1].diagnostics = diagnose_power_law(flops, runs["eval/bits_per_byte"].to_numpy(), laws[-1].fit)
    table = family_comparison(laws)
    assert len(table) == 3 and (table["winner"] == "b").all()
    assert np.allclose(table["a compute multiplier"], 2.0, rtol=1e-6)
    assert np.allclose(table["b compute multiplier"], 1.0)
    laws[1].diagnostics.reasons.append("not identified")  # only identified frontiers are compared
    assert family_comparison(laws).empty


def test_the_family_comparison_says_how_many_seeds_and_rates_stand_behind_it():
    from memlab.analysis.report import _protocol_caveat

    def law(seeds, lrs):
        points = pd.DataFrame({"train.seed": seeds, "train.lr": lrs})
        return Law("f", "compute", "flops", "eval/loss", points)

    thin = _protocol_caveat([law([0, 0], [3e-3, 3e-3])])
    assert "f: 1 seed(s), learning rate(s) 0.003" in thin and "first look" in thin
    assert "first look" not in _protocol_caveat([law([0, 1, 2], [1e-3, 3e-3, 1e-2])])
