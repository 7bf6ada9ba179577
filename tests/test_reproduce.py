"""`memlab reproduce`: results and their validation, the claims registry, the README's generated table (regenerated
only for the repository's own results/), one claim run end to end through the engine (and skipped the second
time), failing runs, plans, and Epoch's refit."""

from __future__ import annotations

import json

import pytest

from memlab import cli
from memlab.errors import ConfigError, RunFailedError
from memlab.registry import CLAIMS
from memlab.reproduce import Claim, Result, checks, readme
from memlab.reproduce.claim import load_result
from memlab.reproduce.parts import Part
from memlab.reproduce.readme import END, START, claims_table, update_readme
from memlab.reproduce.run import claim_names, get_claim, reproduce, study_of
from memlab.sweep import Sweep, grid
from memlab.sweep import launch as sweep_launch
from memlab.sweep.stages import Stage
from tests.helpers import ROOT, TINY

CLAIMS_IN_REPO = ["delta-mem", "epoch-chinchilla", "matrix-utilisation", "memory-models", "mqar-mixers"]


def _result(**changes) -> Result:
    fields = dict(
        claim="c",
        title="A claim",
        source="seed 001",
        source_number="about 0.6",
        measured="0.31 [0.28, 0.35]",
        criterion="within 0.15",
        verdict="not reproduced",
        scale="cpu",
        command="memlab reproduce c --scale cpu",
        table="| a |\n|---|\n| 1 |",
        notes="- one seed",
        details={"x": [1.0, 2.0]},
        figures=["c.png"],
    )
    return Result(**{**fields, **changes})


def test_result_rejects_unknown_verdict_and_scale():
    with pytest.raises(ConfigError, match="reproduced, partly, not reproduced, inconclusive"):
        _result(verdict="mostly")
    part = Part("p", "c", "s", "m", (checks.measured("holds", True, ""),))
    with pytest.raises(ConfigError, match="its parts give 'reproduced'"):
        _result(verdict="partly", parts=[part])
    with pytest.raises(ConfigError, match="scale"):
        _result(scale="laptop")
    with pytest.raises(TypeError):
        _result(details={"bad": object()})


def test_result_round_trips_and_renders(tmp_path):
    part = Part("the part", "c", "s", "0.31", (checks.measured("holds", False, ""),),
                (checks.Check("a check", "evidence", True, "fine"),))  # fmt: skip
    result = _result(parts=[part])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(result.to_json()))
    back = load_result(path)
    assert back.to_json() == result.to_json() and back.parts[0]["verdict"] == "not reproduced"
    assert back.decided() == (1, 1)
    text = result.to_markdown()
    for piece in ("about 0.6", "0.31 [0.28, 0.35]", "**Verdict: not reproduced**", "within 0.15", "![c.png](c.png)",
                  "### the part: **not reproduced**", "| a check | evidence | yes | fine |"):  # fmt: skip
        assert piece in text
    old = dict(result.to_json())
    for key in ("parts", "ladder", "protocol"):
        old.pop(key)
    assert Result.from_json(old).protocol == 1  # a file from before the engine
    assert "predates the protocol engine" in Result.from_json(old).to_markdown()


def test_registry_lists_the_claims_and_names_them_on_a_typo(capsys):
    assert claim_names()[: len(CLAIMS_IN_REPO)] == CLAIMS_IN_REPO
    with pytest.raises(ConfigError, match="epoch-chinchilla, matrix-utilisation, memory-models, mqar-mixers"):
        get_claim("epoch-chinchila")
    assert cli.main(["reproduce", "nope"]) == 2
    assert "mqar-mixers" in capsys.readouterr().err
    assert cli.main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in CLAIMS_IN_REPO)


def test_claims_table_and_readme_update(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name, verdict in (("b-claim", "partly"), ("a-claim", "reproduced")):
        (results / f"{name}.json").write_text(json.dumps(_result(claim=name, verdict=verdict).to_json()))
    table = claims_table(results, link_prefix="results")
    lines = table.splitlines()
    assert len(lines) == 4 and "`a-claim`" in lines[2] and "`b-claim`" in lines[3]  # sorted by claim
    assert "**partly**" in lines[3] and "[b-claim.md](results/b-claim.md)" in lines[3] and "about 0.6" in lines[3]
    assert "predates the evidence checks" in lines[3]  # protocol 1 files say so in the parts column

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\nold table\n{END}\n\nafter\n")
    assert update_readme(readme, results, link_prefix="results")
    text = readme.read_text()
    assert "old table" not in text and table in text and text.endswith(f"{END}\n\nafter\n")
    assert not update_readme(readme, results, link_prefix="results")  # already current: file untouched

    readme.write_text("# no markers\n")
    with pytest.raises(ConfigError, match="claims:start"):
        update_readme(readme, results)


def test_readme_table_is_generated_from_results():
    text = (ROOT / "README.md").read_text()
    assert START in text and END in text, "README.md lost its claims markers"
    inside = text.split(START)[1].split(END)[0].strip()
    assert inside == claims_table(ROOT / "results", link_prefix="results"), "run `memlab reproduce` to regenerate"
    names = {p.stem for p in (ROOT / "results").glob("*.json")}
    assert set(CLAIMS_IN_REPO) <= names


BASE = {t.split("=")[0]: eval(t.split("=")[1]) if t.split("=")[1][0].isdigit() or t.split("=")[1] in ("False", "True")
        else t.split("=")[1] for t in TINY}  # fmt: skip


class _TinyClaim(Claim):
    """A claim over one tiny MQAR run: its verdict is the run's final accuracy against chance."""

    name = "test-tiny"
    title = "Tiny MQAR learns something"
    source = "this test"

    def stages(self, scale):
        base = {**BASE, "train.steps": 10, "train.eval_every": 10, "train.checkpoint_every": 10}
        sweep = Sweep(name="tiny", experiment=str(ROOT / "experiments" / "mqar.py"), base=base, points=grid({}))
        return [Stage("tiny", lambda study: [sweep])]

    def evaluate(self, study, out):
        frame = study.frame("tiny")
        accuracy = float(frame["eval/accuracy"].iloc[0])
        (out / "test-tiny.png").write_bytes(b"png")
        part = Part("learns", "accuracy > 0", "above 0", f"{accuracy:.3f}", (checks.measured("> 0", accuracy > 0, ""),))
        return Result(
            claim=self.name,
            title=self.title,
            source=self.source,
            source_number="above 0",
            measured=f"{accuracy:.3f}",
            criterion="accuracy > 0",
            verdict="reproduced" if accuracy > 0 else "not reproduced",
            scale=study.scale,
            command="",
            details={"accuracy": accuracy, "runs": len(frame)},
            figures=["test-tiny.png"],
            parts=[part],
        )


@pytest.fixture
def tiny_claim():
    CLAIMS.register("test-tiny")(_TinyClaim)
    yield "test-tiny"
    CLAIMS.unregister("test-tiny")


def test_reproduce_end_to_end_skips_completed_runs(tiny_claim, tmp_path, capsys):
    out, workdir = tmp_path / "results", tmp_path / "runs"
    result = reproduce(tiny_claim, out=out, workdir=workdir)
    printed = capsys.readouterr().out
    assert "1 to run, 0 already completed" in printed and f"{tiny_claim}: {result.verdict}" in printed
    assert "plan of test-tiny at cpu scale" in printed  # validated before the first step
    run_dir = workdir / tiny_claim / "tiny" / "tiny"
    assert sweep_launch.run_status(run_dir) == "completed"
    assert load_result(out / f"{tiny_claim}.json").to_json() == result.to_json()
    assert result.measured in (out / f"{tiny_claim}.md").read_text()
    assert result.command == "memlab reproduce test-tiny --scale cpu" and result.details["runs"] == 1

    summary = (run_dir / "summary.json").read_text()
    again = reproduce(tiny_claim, out=out, workdir=workdir)
    assert "0 to run, 1 already completed" in capsys.readouterr().out
    assert (run_dir / "summary.json").read_text() == summary  # not trained again
    assert again.to_json() == result.to_json()


def test_failed_runs_are_named_with_their_directories(tiny_claim, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_launch, "launch_local", lambda todo, workdir, **_: {p.name: 1 for p in todo})
    with pytest.raises(RunFailedError, match=r"1 run\(s\) of sweep 'tiny' for claim 'test-tiny'") as err:
        reproduce(tiny_claim, out=tmp_path / "results", workdir=tmp_path / "runs")
    assert str(tmp_path / "runs" / "test-tiny" / "tiny" / "tiny") in str(err.value)
    assert not (tmp_path / "results" / "test-tiny.json").exists()


def test_epoch_chinchilla_claim_is_reproduced(tmp_path, monkeypatch):
    from memlab.reproduce.claims import epoch_chinchilla

    # ~14 s on 2 cores (not marked slow): 20 resamples, since the verdict rests on the point estimates
    monkeypatch.setitem(epoch_chinchilla.BOOTSTRAP, "cpu", 20)
    claim = get_claim("epoch-chinchilla")
    result = claim.evaluate(study_of(claim, "cpu", tmp_path), tmp_path)
    assert result.verdict == "reproduced", result.table
    assert [p.name for p in result.parts] == ["A", "B", "E", "alpha", "beta"]
    assert all(p.verdict == "reproduced" and p.all_checks[0].passed for p in result.parts)
    assert all(gap < 0.5 for gap in result.details["gap_in_epoch_se"].values()), result.details
    assert "477.8 ± 124.5" in result.table and "20 resamples" in result.notes
    json.dumps(result.to_json())


def test_epoch_criterion_can_fail():
    from memlab.reproduce.claims.epoch_chinchilla import EPOCH, EPOCH_SE, compare

    assert compare(EPOCH)[2] == "reproduced"
    off = {**EPOCH, "E": EPOCH["E"] + 3 * EPOCH_SE["E"]}
    gaps, held, verdict = compare(off)
    assert verdict == "partly" and held == {**{k: True for k in EPOCH}, "E": False} and gaps["E"] == pytest.approx(3)
    assert compare({k: v + 3 * EPOCH_SE[k] for k, v in EPOCH.items()})[2] == "not reproduced"


def test_mqar_criterion_both_halves():
    import pandas as pd

    from memlab.reproduce.claims.mqar_mixers import judge

    def frame(acc):  # {(mixer, d_model): accuracy}, 2048 scored answers each
        rows = [dict(mixer=m, d_model=d, accuracy=a, se=(a * (1 - a) / 2048) ** 0.5) for (m, d), a in acc.items()]
        return pd.DataFrame(rows)

    zoology = {("attn", 32): 1.0, ("gdn", 32): 0.5, ("hebbian", 32): 0.2, ("attn", 64): 1.0, ("gdn", 64): 0.9}
    assert judge(frame(zoology))[2:] == (True, True, "reproduced")
    beaten, gaps, order, closing, verdict = judge(frame({**zoology, ("attn", 64): 0.8}))
    assert not order and "gdn at d_model=64" in beaten[0] and closing and verdict == "partly"
    assert gaps[32]["best"] == "gdn" and gaps[64]["gap"] == pytest.approx(-0.1)
    widening = {**zoology, ("gdn", 64): 0.3}
    assert judge(frame(widening))[2:] == (True, False, "partly")
    assert judge(frame({**widening, ("attn", 32): 0.1}))[4] == "not reproduced"


def test_reproduce_all_runs_every_claim_and_updates_only_the_repository_readme(tmp_path, monkeypatch, capsys):
    """`--out` elsewhere (even from the repository root) leaves README.md alone; `--out` the repository's results/
    regenerates its table from every results file there, so claims not rerun keep their rows."""
    import memlab.reproduce.run as run_module

    done = []

    def fake(name, *, out, **options):
        done.append((name, options["scale"]))
        result = _result(claim=name, verdict="partly")
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result.to_json()))
        return result

    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "results" / "kept-claim.json").write_text(json.dumps(_result(claim="kept-claim").to_json()))
    original = f"# r\n{START}\nthe table\n{END}\n"
    (repo / "README.md").write_text(original)
    monkeypatch.setattr(run_module, "reproduce", fake)
    monkeypatch.setattr(readme, "REPOSITORY", repo)
    monkeypatch.chdir(repo)
    assert cli.main(["reproduce", "all", "--out", str(tmp_path / "elsewhere"), "--scale", "paper"]) == 0
    assert done == [(name, "paper") for name in claim_names()]
    assert (repo / "README.md").read_text() == original and "updated the claims table" not in capsys.readouterr().out

    assert cli.main(["reproduce", "mqar-mixers", "--out", "results"]) == 0
    assert "updated the claims table" in capsys.readouterr().out
    text = (repo / "README.md").read_text()
    assert "[mqar-mixers.md](results/mqar-mixers.md)" in text and "`kept-claim`" in text


def test_dry_run_validates_every_stage_over_every_candidate_before_training(tmp_path, monkeypatch, capsys):
    """A config that only a later choice produces fails the plan, naming the stage, before any run; a real run
    validates the same plan before its first step."""
    import memlab.reproduce.run as run_module
    from memlab.sweep.stages import Search

    def sweep(name, rows):
        return Sweep(name=name, experiment=str(ROOT / "experiments" / "mqar.py"), base={**BASE, "train.steps": 5},
                     points=rows)  # fmt: skip

    class Later(_TinyClaim):
        name = "test-later"

        def stages(self, scale):
            search = Search("lr", "train.lr", (1e-3, 3e-3, 1e-2), "@g", ("a",), lambda st, rows: [sweep("lr", rows)],
                            lambda row: "a", lambda row: (0,), "none")  # fmt: skip
            # a rate two extensions up (0.1) makes a negative warmup: only some choices are invalid
            warmup = lambda st: [{"train.warmup_steps": 1 - int(20 * st.choice("lr")["a"])}]  # noqa: E731
            later = Stage("later", lambda st: [sweep("later", warmup(st))], after=("lr",))
            return [search, later]

    CLAIMS.register("test-later")(Later)
    try:
        launched = []
        monkeypatch.setattr(run_module, "run_sweep", lambda *a, **k: launched.append(a))
        with pytest.raises(ConfigError, match=r"stage 'later'.*warmup_steps"):
            reproduce("test-later", out=tmp_path / "out", workdir=tmp_path / "runs")
        assert launched == []  # nothing trained
        assert cli.main(["reproduce", "test-later", "--dry-run"]) == 2
        assert "stage 'later'" in capsys.readouterr().err
    finally:
        CLAIMS.unregister("test-later")


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_dry_run_of_every_claim_plans_and_validates(scale, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a plan writes nothing: not here, not under runs/
    assert cli.main(["reproduce", "all", "--scale", scale, "--dry-run", "--device", "h100", "--mfu", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert all(f"plan of {name} at {scale} scale" in printed for name in claim_names())
    assert f"all {len(claim_names())} claims at {scale} scale" in printed and "h100-hours at MFU 0.3" in printed
    assert list(tmp_path.iterdir()) == []
    if scale == "paper":  # the slot grid's k = 64 needs 64 distinct key ids: the paper vocabulary has them
        from memlab.studies.slot_memory.protocol import SCALES, grid_sweep
        from memlab.sweep import expand

        lrs = dict.fromkeys(["slot_memory", "encdec-noenc"], 1e-3)
        configs = [p.config for p in expand(grid_sweep(SCALES["paper"], lrs))]
        assert max(c.model.num_slots for c in configs if c.model.name == "slot_memory") == 64


def test_results_files_keep_the_contract():
    """What the README table, the tests and outside tools read from results/<claim>.json."""
    from memlab.reproduce.parts import PART_VERDICTS, VERDICTS, claim_verdict

    for path in sorted((ROOT / "results").glob("*.json")):
        data = json.loads(path.read_text())
        assert data["verdict"] in VERDICTS, path.name
        if data.get("protocol", 1) < 2:
            assert not data.get("parts"), f"{path.name}: a protocol-1 result predates the parts"
            continue
        assert data["parts"], f"{path.name}: a protocol-2 result has parts"
        for part in data["parts"]:
            assert {"name", "criterion", "source_number", "measured", "verdict", "checks"} <= set(part)
            assert part["verdict"] in PART_VERDICTS
            for check in part["checks"]:
                assert set(check) == {"name", "kind", "passed", "detail"} and check["kind"] in ("evidence", "sanity")
            failed = [c for c in part["checks"] if c["kind"] == "evidence" and not c["passed"]]
            assert not failed or part["verdict"] == "inconclusive", (path.name, part["name"])
        assert data["verdict"] == claim_verdict([p["verdict"] for p in data["parts"]]), path.name
        if data.get("ladder"):
            ladder = data["ladder"]
            assert {"axis", "points", "law", "forecast"} <= set(ladder)
            assert all({"x", "effect", "lo", "hi"} <= set(p) for p in ladder["points"])
            assert ladder["forecast"] is not None or ladder["reason"]
