"""The evidence checks against the patterns the claims audit found (shared/research/claims-audit.md, first section):
each on fabricated numbers or a fabricated run tree, where the logic before the protocol engine gave a verdict and
the engine's checks make the part inconclusive, a property of the setup, or a sanity check. Plus the verdict rules,
the intervals, the knob search and the scale ladder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from memlab.reproduce import checks
from memlab.reproduce.claim import Claim, Result
from memlab.reproduce.intervals import difference, rate, wilson
from memlab.reproduce.ladder import Ladder, LadderPoint, no_ladder
from memlab.reproduce.parts import Part, claim_verdict
from memlab.sweep import Sweep, expand
from memlab.sweep.search import candidates, next_value, search
from memlab.sweep.stages import Search, Stage, Study
from tests.helpers import ROOT
from tests.test_reproduce import BASE


def _part(*conditions, checks_=()) -> Part:
    return Part("p", "criterion", "the source's number", "memlab's", tuple(conditions), tuple(checks_))


# --- verdict rules ---------------------------------------------------------------------------------------------------


def test_verdicts_follow_from_the_parts():
    holds, fails = checks.measured("x", True, ""), checks.measured("x", False, "")
    bad = checks.Check("an evidence check", "evidence", False, "")
    odd = checks.Check("a sanity check", "sanity", False, "")
    assert _part(holds).verdict == "reproduced" and _part(fails).verdict == "not reproduced"
    assert _part(holds, checks_=[bad]).verdict == "inconclusive"  # whatever the numbers say
    assert _part(holds, checks_=[odd]).verdict == "reproduced"  # sanity decides nothing
    assert claim_verdict(["reproduced", "inconclusive"]) == "reproduced"
    assert claim_verdict(["reproduced", "not reproduced"]) == "partly"
    assert claim_verdict(["not reproduced", "inconclusive"]) == "not reproduced"
    assert claim_verdict(["inconclusive"]) == claim_verdict([]) == "inconclusive"
    with pytest.raises(ValueError, match="kind"):
        checks.Check("c", "opinion", True, "")


# --- learning rates at the edge of the grid --------------------------------------------------------------------------


def test_next_values_and_candidates_on_the_one_three_ladder():
    assert next_value([1e-3, 3e-3, 1e-2], +1) == 0.03 and next_value([1e-3, 3e-3, 1e-2], -1) == 3e-4
    assert next_value([3e-2], +1) == 0.1 and next_value([2e-4, 6e-4], +1) == 1.8e-3  # off the ladder: its spacing
    assert candidates([1e-3, 3e-3, 1e-2], 2) == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    assert next_value([-4.0, -1.5], -1) == -6.5 and next_value([-4.0, -1.5], +1) == 1.0  # a gate bias: linear


def test_an_in_process_search_extends_past_the_edge_until_interior_or_its_bound():
    """The slow-weights audit: writes chose 0.1, the top of 1e-2..1e-1, with the loss still falling; today's
    `max(tried)` took 0.1 silently."""
    grid = (1e-2, 3e-2, 1e-1)
    peak = lambda best: lambda lr: (-abs(math.log10(lr / best)),)  # noqa: E731
    inside = search("write lr", "plain", grid, peak(0.3))  # the best lies one step past the top
    assert inside.tried == (1e-2, 3e-2, 1e-1, 0.3, 1.0) and inside.chosen == 0.3 and inside.interior
    assert checks.interior(inside).passed
    beyond = search("write lr", "meta", grid, peak(10.0))
    assert beyond.tried[-1] == 1.0 and beyond.chosen == 1.0 and beyond.bound_reached
    check = checks.interior(beyond)
    assert not check.passed and check.kind == "evidence" and "bound" in check.detail
    assert search("lr", "g", grid, peak(3e-2)).tried == grid  # interior at once: nothing added


def _fake_run(directory, name, config: dict, summary: dict, curve: list[float] | None = None):
    run = directory / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    rows = [{"step": i + 1, "eval/exact_match": v} for i, v in enumerate(curve or [summary["eval/exact_match"]])]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed", **summary}))


class _SearchClaim(Claim):
    """Three groups whose fabricated exact match peaks at a known rate: inside the grid, one step past its top,
    and far past it."""

    name = "test-search"
    PEAKS = {"inside": 3e-3, "past": 3e-2, "far": 10.0}

    def stages(self, scale):
        def sweeps(study, rows):
            experiment = str(ROOT / "experiments" / "mqar.py")
            return [Sweep(name="lr", experiment=experiment, base={**BASE, "train.steps": 5}, points=rows)]

        search = Search("lr", "train.lr", (1e-3, 3e-3, 1e-2), "@group", tuple(self.PEAKS), sweeps,
                        group_of=lambda row: row["logging.run_name"].split("-")[0].split("=")[1],
                        score=lambda row: (row["eval/exact_match"],), rule="best exact match")  # fmt: skip
        return [search]

    def evaluate(self, study, out):
        part = _part(checks.measured("learns", True, ""))
        return Result("test-search", "t", "s", "n", "m", "c", "reproduced", study.scale, "", parts=[part])


def test_the_engine_extends_a_rate_search_past_the_edge_and_marks_the_bound(tmp_path, monkeypatch):
    """Today's `chosen_lrs` picked 1e-2, the grid's top, for both 'past' and 'far'. The engine runs 3e-2 and 1e-1
    for them; 'past' ends interior, 'far' at its bound, and every part carries the failed interior check."""
    import memlab.reproduce.run as engine
    from memlab.registry import CLAIMS

    trained = []

    def fake_run_sweep(claim, sweep, workdir, **_):
        for point in expand(sweep):
            if (workdir / point.name).exists():
                continue
            group, lr = point.values["@group"], point.values["train.lr"]
            score = max(0.0, 1 - abs(math.log10(lr / _SearchClaim.PEAKS[group])) / 4)
            config = {"train": {"lr": lr}, "logging": {"run_name": point.name}}
            _fake_run(workdir, point.name, config, {"eval/exact_match": score})
            trained.append((group, lr))

    monkeypatch.setattr(engine, "run_sweep", fake_run_sweep)
    CLAIMS.register("test-search")(_SearchClaim)
    try:
        result = engine.reproduce("test-search", out=tmp_path / "out", workdir=tmp_path / "runs")
    finally:
        CLAIMS.unregister("test-search")
    records = {r["group"]: r for r in result.details["searches"]}
    assert records["inside"]["tried"] == [1e-3, 3e-3, 1e-2] and records["inside"]["interior"]
    assert records["past"]["tried"] == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1] and records["past"]["chosen"] == 3e-2
    assert records["far"]["chosen"] == 0.1 and records["far"]["bound_reached"]
    assert sorted(lr for g, lr in trained if g == "far") == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    part = result.parts[0]
    failed = [c.name for c in part.failed]
    assert failed == ["train.lr interior (far)"] and part.verdict == "inconclusive"
    assert result.verdict == "inconclusive"  # the part's numbers said reproduced


# --- criteria decided by configuration -------------------------------------------------------------------------------


def test_a_share_the_configuration_fixes_is_a_property_of_the_setup():
    """delta-mem: 'trains <= 2% of the parameters' is 3.0% at d = 64 whatever the adapters learn (6,160 of
    205,008); today it made `tsw_closes_gap` False on its own."""
    from memlab.config import load_config
    from memlab.sweep.estimate import estimate

    config = load_config(ROOT / "experiments" / "window_recall.py",
                         ["model.delta_mem='tsw'", "train.trainable=('.*delta_mem/',)"])  # fmt: skip
    sizes = estimate(config)
    configured = sizes["params_trainable"] / sizes["params"]
    share = configured  # what the trained run's summary reports: the same count
    clause = checks.by_configuration("trains <= 2%", share <= 0.02, share, configured, "trainable share")
    assert clause.decided_by == "configuration"
    gap = checks.measured("closes >= 50% of the gap", True, "")
    part = _part(gap, clause)
    assert part.verdict == "reproduced"  # decided by what training did, not by the adapter's size
    sanity = [c for c in part.all_checks if c.name == "trains <= 2%"]
    assert sanity and sanity[0].kind == "sanity" and "property of the setup" in sanity[0].detail
    assert _part(clause).verdict == "inconclusive"  # nothing left that training decided
    assert checks.by_configuration("n", True, share * 1.1, configured, "").decided_by == "measurement"


# --- controls equal by construction ----------------------------------------------------------------------------------


def test_a_control_equal_to_its_reference_bit_for_bit_is_sanity():
    """delta-mem's zeroed state reproduces the backbone bit for bit: a sanity check, not a finding."""
    backbone = np.array([0.0234, 0.0469, 0.996, 2.388])
    zeroed = backbone.copy()
    clause = checks.control("zeroed state reads as the backbone", True, zeroed, backbone, "")
    assert clause.decided_by == "construction" and _part(clause).verdict == "inconclusive"
    assert _part(clause).all_checks[0].kind == "sanity"
    moved = checks.control("zeroed", True, zeroed + 1e-6, backbone, "")
    assert moved.decided_by == "measurement"


# --- comparisons near chance -----------------------------------------------------------------------------------------


def test_a_difference_near_chance_is_not_a_win():
    """'MSW beats TSW at 8 facts': 0.052 vs 0.033, chance 1/64, two seeds of 512 episodes; today: MSW >= TSW."""
    msw, tsw, n = np.array([0.0518, 0.0518]), np.array([0.0332, 0.0332]), 512
    assert msw.mean() >= tsw.mean()  # today's criterion
    diff = checks.real_difference("MSW - TSW", difference(msw, tsw, n, n))
    assert not diff.passed and "includes 0" in diff.detail
    part = _part(checks.measured("MSW > TSW", True, ""), checks_=[diff])
    assert part.verdict == "inconclusive"
    at_chance = checks.above_chance("tsw", rate([0.02, 0.02], n), 1 / 64)
    assert not at_chance.passed and "at chance" in at_chance.detail
    # a real gap passes: 0.30 vs 0.03 on the same counts
    assert checks.real_difference("x", difference([0.3, 0.3], tsw, n, n)).passed


def test_intervals_bootstrap_seeds_and_fall_back_to_wilson():
    lo, hi = wilson(0.0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04  # the rule of three, roughly
    three = rate([0.2, 0.4, 0.6], 100)
    assert three.method == "bootstrap over 3 seeds" and three.lo >= 0.2 and three.hi <= 0.6
    two = rate([0.2, 0.4], 100)
    assert two.method == "Wilson over 100 examples"  # seeds whose spread is unknown do not narrow it
    assert not math.isfinite(rate([0.5], None).lo)  # no seeds, no counts: no interval
    assert difference([1.0, 1.1, 0.9], [0.0, 0.1, -0.1]).excludes(0)


# --- thresholds that are not the source's ----------------------------------------------------------------------------


def test_a_threshold_must_be_the_sources_or_relative_to_measured_controls():
    """memory-models: a 0.30 cap on the causal LM's I_e' (the untrained encoder already scores 0.299) failed part 1
    at 0.334; relative to the controls the LM sits ~5% of the way from untrained to the autoencoder."""
    lm, untrained, autoencoder = 0.334, 0.299, 0.990
    assert not lm <= 0.30  # today's verdict on part 1
    absolute = checks.Threshold.absolute(0.30, "memlab's cap")
    assert not absolute.check("LM").passed
    relative = checks.Threshold.relative(0.5, ("untrained", untrained), ("autoencoder", autoencoder))
    assert relative.value == pytest.approx(0.6445) and relative.check("LM").passed and lm < relative.value
    assert checks.Threshold.from_source(0.97, "Badger: I_e ~0.97").check("AE").passed
    assert not checks.Threshold.relative(0.5, ("a", 0.3), ("b", 0.3)).check("x").passed  # controls not apart
    assert not checks.Threshold.from_source(0.9, "").check("x").passed  # a source must be cited


# --- budgets too small to learn --------------------------------------------------------------------------------------


def test_a_family_at_chance_or_still_learning_decides_nothing():
    """slot-efficiency at 4e12 FLOPs: the full encoder-decoder stays at chance at every rate, and today it counted as
    a baseline the slots beat."""
    at_chance = checks.above_chance("encdec at its rate", rate([0.0, 0.0, 0.0], 256), 1 / 41**2)
    assert not at_chance.passed
    rising = checks.converged("eval exact match", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], higher_is_better=True)
    assert not rising.passed and "still improving" in rising.detail
    flat = checks.converged("eval exact match", [0.0, 0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9], higher_is_better=True)
    assert flat.passed
    loss = checks.converged("eval loss", [3.0, 2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 0.7], higher_is_better=False)
    assert not loss.passed
    assert not checks.converged("x", [0.1, 0.2], higher_is_better=True).passed  # too few evaluations
    assert checks.fixed_budget("ratio", "equal compute").passed


def test_a_compute_ratio_shows_what_it_asks_of_sample_efficiency():
    """slot-efficiency at L = 128: per example, encdec-noenc costs 2.4x the slots, so >= 5.5x asks the slots to need
    2.3x fewer examples than a model that reads the whole context."""
    check = checks.compute_ratio("encdec-noenc", 3.0, 2.4, 5.5)
    assert check.kind == "sanity" and "1.25x examples" in check.detail and "2.29x" in check.detail


# --- one scale -------------------------------------------------------------------------------------------------------


def test_a_ladder_fits_the_effect_and_forecasts_only_when_identified():
    xs = [64, 128, 256, 512, 1024]
    clean = Ladder("d_model", [LadderPoint(x, 2.0 * x**-0.5, 0, 0) for x in xs], effect="gap").fit(4096)
    assert clean.law["identified"] and clean.forecast is not None
    assert clean.forecast["effect"] == pytest.approx(2.0 * 4096**-0.5, rel=1e-6)
    assert clean.forecast["lo"] <= clean.forecast["effect"] <= clean.forecast["hi"] and clean.check().passed
    three = Ladder("d_model", [LadderPoint(x, 1.0 / x, 0, 0) for x in xs[:3]]).fit(4096)
    assert three.forecast is None and "needs 4" in three.reason and not three.check().passed
    noisy = Ladder("d", [LadderPoint(x, y, 0, 0) for x, y in zip(xs, [1.0, 0.2, 3.0, 0.1, 2.0], strict=True)]).fit(4096)
    assert noisy.forecast is None and "not identified" in noisy.reason
    negative = Ladder("d", [LadderPoint(x, -0.1, 0, 0) for x in xs]).fit(4096)
    assert negative.forecast is None and "not a positive number" in negative.reason
    assert set(clean.to_json()) == {"axis", "effect_name", "points", "law", "forecast", "reason"}
    one = no_ladder("L")
    assert one.kind == "sanity" and not one.passed


# --- the plan sees every choice --------------------------------------------------------------------------------------


def test_a_stage_after_a_search_is_planned_over_every_candidate(tmp_path):
    from memlab.reproduce.plan import make_plan

    seen = []

    def later(study):
        seen.append(study.choice("lr")["g"])
        return []

    search = Search("lr", "train.lr", (1e-3, 1e-2), "@g", ("g",), lambda s, rows: [], lambda r: "g", lambda r: (0,), "")
    study = Study("c", "cpu", tmp_path, [search, Stage("later", later, after=("lr",))])
    plan = make_plan(_SearchClaim(), study)
    assert seen == candidates((1e-3, 1e-2), 2) and [s.stage for s in plan.stages] == ["lr", "later"]
