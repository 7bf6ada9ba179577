"""Results side of memlab: run directories (and W&B) → DataFrame → laws → report.md + PNGs.

Runs are synthetic (tests/fixtures/fake_sweep.py): they obey the run-directory contract and their losses come
from a known law, so loaders, fits and report can be checked without training anything.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_sweep import (  # noqa: E402
    TRUTH,
    compute_optimal_n,
    n_params,
    write_isoflop_sweep,
    write_run,
    write_slot_sweep,
    write_sweep,
)

from memlab.analysis import laws as laws_module  # noqa: E402
from memlab.analysis import load_curves, load_runs, load_wandb_runs, varied_axes, write_report  # noqa: E402
from memlab.analysis.axes import infer_varied, plot_axes, with_derived_axes  # noqa: E402
from memlab.analysis.laws import fit_laws, pareto_front  # noqa: E402
from memlab.analysis.runs import flatten  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """2 families × 5 sizes, plus a failed run, a running run with a torn log and a run with no summary."""
    return write_sweep(tmp_path_factory.mktemp("sweep"), extra_runs=True, noise=0.002)


@pytest.fixture(scope="module")
def runs(sweep) -> pd.DataFrame:
    return load_runs(sweep)


def by_run(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs.set_index("run").loc[name]


# ---------------------------------------------------------------- loading run directories


def test_flatten_joins_keys_and_freezes_lists():
    flat = flatten({"model": {"d_model": 64, "inner": {"k": 2}}, "logging": {"tags": ["a", ["b"]]}, "mesh": {}})
    assert flat == {"model.d_model": 64, "model.inner.k": 2, "logging.tags": ("a", ("b",))}


def test_one_row_per_run_with_config_and_summary_columns(runs):
    assert len(runs) == 13
    assert runs["run"].is_unique
    row = by_run(runs, "attn-d64")
    assert row["model.d_model"] == 64 and row["model.mixers"] == "attn" and row["data.task"] == "mqar"
    assert row["objective.answer"] == 1.0 and row["logging.sweep_id"] == "sw-test"
    assert row["family"] == "lm:attn" and row["status"] == "completed"
    assert row["params"] == n_params(64, 2)[0]
    assert row["tokens"] == 200 * 8 * 128 and row["flops"] == 6 * row["params"] * row["tokens"]
    assert 0 < row["eval/loss"] < 10 and 0 <= row["eval/accuracy"] <= 1
    assert Path(row["run_dir"]).name == "attn-d64"
    # stamps: the useful few only, never the package list
    assert row["stamps.git_commit"] == "abc1234"
    assert not [c for c in runs if c.startswith("stamps.packages")]
    assert list(runs.columns[:3]) == ["run", "family", "status"]


def test_running_run_reads_progress_from_its_log_and_skips_the_torn_line(runs, sweep):
    torn = (sweep / "gdn-d512-running" / "metrics.jsonl").read_text().splitlines()[-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(torn)
    row = by_run(runs, "gdn-d512-running")
    assert row["status"] == "running"
    # the summary was written at step 100; the log's last whole line is step 110 (120 is torn)
    assert row["step"] == 110 and row["tokens"] == 110 * 8 * 128
    assert row["steps"] == 400
    curve = load_curves(sweep / "gdn-d512-running")
    assert curve["step"].tolist() == list(range(10, 111, 10))
    assert row["eval/loss"] == curve["eval/loss"].dropna().iloc[-1]


def test_torn_tail_is_silent_but_a_corrupt_middle_line_warns(tmp_path, sweep):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_curves(sweep / "gdn-d512-running")
    run_dir = write_run(tmp_path, "r", steps=30)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20] + lines[2]  # a resume appended onto a torn line
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="undecodable lines"):
        curve = load_curves(run_dir)
    assert curve["step"].tolist() == [10, 30]


def test_run_without_summary_is_running_with_family_from_config(runs):
    row = by_run(runs, "gdn-d768-starting")
    assert row["status"] == "running" and row["family"] == "lm:gdn"
    assert row["step"] == 10 and row["steps"] == 400 and pd.isna(row["params"])


def test_failed_run_is_kept_with_its_error(runs):
    row = by_run(runs, "attn-d512-failed")
    assert row["status"] == "failed" and "NaN" in row["error"]
    assert row["step"] == 40


def test_load_runs_errors_on_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_runs(tmp_path / "nope")
    assert load_runs(tmp_path).empty


def test_curves_on_demand_and_eagerly(runs, sweep):
    lazy = runs.curves["gdn-d96"]
    assert {"step", "tokens", "flops", "train/loss", "eval/loss", "eval/accuracy"} <= set(lazy.columns)
    assert lazy["step"].is_monotonic_increasing and lazy["flops"].iloc[-1] == by_run(runs, "gdn-d96")["flops"]
    eager = load_runs(sweep, curves=True)
    pd.testing.assert_frame_equal(eager.curves["gdn-d96"], lazy)
    assert isinstance(eager.set_index("run").loc["gdn-d96", "curve"], pd.DataFrame)
    long = runs.curves.long()
    assert len(long) == sum(len(runs.curves[r]) for r in runs["run"])
    assert set(long["family"]) == {"lm:attn", "lm:gdn"}
    with pytest.raises(KeyError, match="no run named"):
        runs.curves["missing"]


# ---------------------------------------------------------------- varied axes


def test_varied_axes_come_from_sweep_json_in_its_order(runs, sweep):
    assert varied_axes(runs, sweep) == ["model.mixers", "model.d_model"]


def test_varied_axes_inferred_without_sweep_json(tmp_path):
    root = write_sweep(tmp_path, d_models=(32, 64), steps=(100, 200), sweep_json=False)
    runs = load_runs(root)
    axes = varied_axes(runs, root)
    assert set(axes) == {"model.d_model", "model.mixers", "train.steps"}
    assert infer_varied(runs) == axes  # run names and W&B groups vary too, but are bookkeeping, not axes


def test_derived_compression_ratio_and_family_only_axes(tmp_path):
    runs = load_runs(write_slot_sweep(tmp_path))
    runs, derived = with_derived_axes(runs)
    assert derived == ["L/k"]
    slots = runs[runs["family"] == "slot_memory"]
    assert sorted(slots["L/k"].unique()) == [4, 16]
    assert runs.loc[runs["family"] == "lm:attn", "L/k"].isna().all()
    axes = varied_axes(runs, tmp_path) + derived
    assert plot_axes(runs, axes) == ["model.num_slots", "data.context_len", "L/k"]  # seed: averaged over


def test_state_size_is_an_axis_when_it_varies():
    import pandas as pd

    varied = pd.DataFrame({"family": ["lm:attn", "lm:gdn"], "state_size": [8192, 2048]})
    assert with_derived_axes(varied)[1] == ["state_size"]
    assert with_derived_axes(varied.assign(state_size=[2048, 2048]))[1] == []


# ---------------------------------------------------------------- W&B


class FakeRun:
    """The attributes of `wandb.apis.public.Run` that the loader reads."""

    def __init__(self, run_dir: Path, *, wrap_config: bool = False, state: str = "finished"):
        config = json.loads((run_dir / "config.json").read_text())
        self.config = {k: {"value": v, "desc": None} for k, v in config.items()} if wrap_config else config
        summary = json.loads((run_dir / "summary.json").read_text())
        self.summary_metrics = {**summary, "_runtime": 12.5, "_step": summary["step"], "_wandb": {"runtime": 12}}
        self.state, self.name, self.id = state, run_dir.name, f"id{run_dir.name}"
        self.path = ["ent", "proj", self.id]
        self._history = [
            {k: v for k, v in r.items() if k != "step"} | {"_step": r["step"], "_runtime": 1.0}
            for r in load_curves(run_dir).to_dict("records")
        ]

    def scan_history(self):
        return iter(self._history)


class FakeApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return list(self._runs)


@pytest.fixture
def fake_api(sweep, tmp_path):
    other = write_run(tmp_path, "other-sweep-run", sweep_id="sw-other")
    runs = [FakeRun(sweep / "attn-d64"), FakeRun(sweep / "gdn-d96", wrap_config=True), FakeRun(other)]
    return FakeApi(runs)


def test_wandb_loader_filters_by_sweep_and_matches_local_columns(fake_api, runs):
    frame = load_wandb_runs("proj", entity="ent", sweep_id="sw-test", api=fake_api)
    assert fake_api.calls == [("ent/proj", {"config.logging.sweep_id": "sw-test"})]
    assert sorted(frame["run"]) == ["attn-d64", "gdn-d96"]  # the other sweep's run is dropped client-side too
    local_columns = set(runs.columns) - {"run_dir"}
    assert local_columns <= set(frame.columns)
    assert not [c for c in frame if c.startswith("_")]
    for name in ("attn-d64", "gdn-d96"):  # wrapped {"value": ...} configs unwrap to the same values
        local, remote = by_run(runs, name), by_run(frame, name)
        for column in ("model.d_model", "model.mixers", "params", "flops", "eval/loss", "status", "family"):
            assert local[column] == remote[column], column
    assert set(frame["wandb_path"]) == {"ent/proj/idattn-d64", "ent/proj/idgdn-d96"}


def test_wandb_loader_launch_filter_states_and_curves(sweep, fake_api):
    frame = load_wandb_runs("proj", launch_id="ln-1", api=fake_api, curves=True)
    assert fake_api.calls[-1] == ("proj", {"config.logging.launch_id": "ln-1"})
    assert len(frame) == 3
    curve = frame.curves["gdn-d96"]
    pd.testing.assert_series_equal(curve["eval/loss"], load_curves(sweep / "gdn-d96")["eval/loss"])
    assert curve["step"].tolist() == load_curves(sweep / "gdn-d96")["step"].tolist()
    crashed = FakeRun(sweep / "attn-d64", state="crashed")
    del crashed.summary_metrics["status"]
    row = load_wandb_runs("proj", api=FakeApi([crashed])).iloc[0]
    assert row["status"] == "failed" and row["wall_seconds"] > 0


# ---------------------------------------------------------------- laws


def test_pareto_front_keeps_only_runs_no_cheaper_run_beats():
    points = pd.DataFrame({"flops": [1, 2, 3, 4, 5], "loss": [5.0, 4.0, 4.5, 3.0, 3.5]})
    assert pareto_front(points, "flops", "loss")["flops"].tolist() == [1, 2, 4]


def test_laws_skip_with_reasons_when_points_are_too_few(runs):
    few = runs[runs["model.d_model"].isin([32, 64, 96]) | (runs["status"] != "completed")]
    laws = fit_laws(few, bootstrap=0)
    assert {(law.family, law.kind) for law in laws} == {
        (f, k) for f in ("lm:attn", "lm:gdn") for k in ("compute", "params", "chinchilla", "isoflop")
    }
    for law in laws:
        assert law.fit is None and law.skipped
    compute = next(law for law in laws if law.kind == "compute")
    assert "needs 4 distinct values of flops" in compute.skipped and "has 3" in compute.skipped
    chinchilla = next(law for law in laws if law.kind == "chinchilla")
    assert "needs 8 completed runs" in chinchilla.skipped


@pytest.mark.slow
def test_law_in_params_recovers_the_generating_exponent(runs):
    """At fixed D, L(N) = (E + B/D^β) + A/N^α: the fitted α and the floor E + B/D^β should come back."""
    laws = fit_laws(runs, bootstrap=0, size="params")  # the fixture's truth counts all parameters
    for family, mixer in (("lm:attn", "attn"), ("lm:gdn", "gdn")):
        law = next(law for law in laws if law.kind == "params" and law.family == family)
        assert law.fit is not None, law.skipped
        assert len(law.points) == 5  # the failed and running runs are not fitted
        truth = TRUTH[mixer]
        floor = truth["E"] + truth["B"] / (200 * 8 * 128) ** truth["beta"]
        assert abs(law.fit.alpha - truth["alpha"]) < 0.1
        assert abs(law.fit.E - floor) / floor < 0.1
        compute = next(law for law in laws if law.kind == "compute" and law.family == family)
        assert compute.fit is not None and compute.fit.alpha > 0
        chinchilla = next(law for law in laws if law.kind == "chinchilla" and law.family == family)
        assert chinchilla.skipped == "needs 8 completed runs, has 5"


def test_isoflop_valleys_find_the_compute_optimal_size(tmp_path):
    runs = load_runs(write_isoflop_sweep(tmp_path))
    (law,) = fit_laws(runs, kinds=("isoflop",), size="params")
    assert law.fit is not None, law.skipped
    table = law.fit.table
    assert table["n_runs"].tolist() == [6, 6] and not table["extrapolated"].any()
    for flops, n_opt in zip(table["flops"], table["n_opt"], strict=True):
        assert abs(n_opt / compute_optimal_n(TRUTH["attn"], flops) - 1) < 0.15
    with pytest.raises(ValueError, match="unknown law kinds"):
        fit_laws(runs, kinds=("isoflops",))


@pytest.mark.slow
def test_chinchilla_fitted_and_reported_when_n_and_d_vary_independently(tmp_path):
    root = write_sweep(tmp_path, mixers=("attn",), d_models=(32, 64, 128, 192), steps=(100, 200, 400), noise=0.002)
    report = write_report(root, bootstrap=0, chinchilla_bootstrap=0, size="params")  # the truth counts all N
    text = report.read_text()
    assert "**eval/loss vs parameters N and tokens D (Chinchilla)**" in text
    assert "Fitted on 12 completed runs." in text and "| beta |" in text
    assert "Compute-optimal allocation (C = 6·N·D):" in text and "tokens per parameter |" in text
    chinchilla = text.split("(Chinchilla)**")[1].split("## Plots")[0]
    estimates = dict(re.findall(r"^\| (\w+) \| ([-\d.e+]+) \|", chinchilla, flags=re.M))
    assert abs(float(estimates["alpha"]) - TRUTH["attn"]["alpha"]) < 0.05
    assert abs(float(estimates["beta"]) - TRUTH["attn"]["beta"]) < 0.1
    assert "eval_accuracy_vs_train_steps.png" in _pngs_ok(report)


# ---------------------------------------------------------------- report


def _pngs_ok(report: Path) -> list[str]:
    """Every image the report links exists, is a PNG, and has real content."""
    import matplotlib.image

    text = report.read_text()
    names = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    for name in names:
        path = report.parent / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    return names


@pytest.mark.slow
def test_report_on_a_model_size_sweep(sweep):
    report = write_report(sweep, bootstrap=20)
    assert report == sweep / "report.md"
    text = report.read_text()
    for heading in (
        "# Sweep report: tiny",
        "## Runs",
        "## Best run per family",
        "## Fitted laws",
        "### lm:attn",
        "### lm:gdn",
        "**eval/loss vs compute C (FLOPs)**",
        "**eval/loss vs parameters N (non-embedding)**",
        "## Plots",
    ):
        assert heading in text, heading
    assert "- runs: 13 (10 completed, 2 running, 1 failed)" in text
    assert "main metric: `eval/accuracy` (higher is better)" in text
    assert "`attn-d512-failed`: FloatingPointError" in text
    assert "| `gdn-d512-running` | lm:gdn |" in text and "110/400" in text
    assert text.count("| alpha |") == 4  # compute and params laws, both families
    assert "Skipped: needs 8 completed runs, has 5." in text  # Chinchilla: one token budget per size
    assert "`model.mixers`" in text.split("## Plots")[1]  # only tells families apart: said, not plotted
    laws = json.loads((sweep / "laws.json").read_text())
    assert len(laws) == 8 and sum(law["fit"] is not None for law in laws) == 4
    assert {law["kind"] for law in laws if law["fit"] is None} == {"chinchilla", "isoflop"}
    assert all(law["identified"] and law["diagnostics"]["n_points"] == 5 for law in laws if law["fit"] is not None)
    assert "### Diagnostics" in text and "| non-emb params |" in text
    fitted = next(law for law in laws if law["kind"] == "params" and law["family"] == "lm:attn")
    assert fitted["runs"] == ["attn-d32", "attn-d64", "attn-d96", "attn-d128", "attn-d192"]
    assert fitted["fit"]["ci"]["alpha"][0] < fitted["fit"]["alpha"] < fitted["fit"]["ci"]["alpha"][1]
    names = _pngs_ok(report)
    assert names == [
        "eval_loss_vs_compute.png",
        "eval_accuracy_vs_compute.png",
        "eval_loss_vs_params.png",
        "eval_accuracy_vs_model_d_model.png",
    ]


def test_report_on_a_slot_sweep_plots_each_axis(tmp_path):
    root = write_slot_sweep(tmp_path)
    text = write_report(root, metric="eval/loss", bootstrap=0).read_text()
    assert "main metric: `eval/loss` (lower is better)" in text
    assert "varied axes: `model.num_slots`, `data.context_len`, `train.seed`, `L/k`" in text
    assert "Skipped: needs 4 distinct values of flops on the compute frontier of completed runs, has 1." in text
    assert "model size was not varied" in text
    names = _pngs_ok(root / "report.md")
    assert {"eval_loss_vs_model_num_slots.png", "eval_loss_vs_data_context_len.png", "eval_loss_vs_L_k.png"} <= set(
        names
    )


def test_report_survives_a_failing_fit(sweep, monkeypatch):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("singular matrix")

    monkeypatch.setattr(laws_module, "fit_power_law", broken)
    text = write_report(sweep, bootstrap=0).read_text()
    assert "Skipped: fit failed: LinAlgError: singular matrix." in text
    assert "frontier" not in text.split("## Plots")[1]


def test_report_on_an_empty_dir_and_an_unknown_metric(tmp_path, sweep):
    text = write_report(tmp_path).read_text()
    assert "No run directories" in text
    with pytest.raises(ValueError, match="eval/acc.*metrics present"):
        write_report(sweep, metric="eval/acc")
