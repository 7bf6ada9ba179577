"""`memlab reproduce`: results and their validation, the claims registry, the README's generated table, one claim
run end to end through the sweep launchers (and skipped the second time), failing runs, and Epoch's refit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memlab import cli
from memlab.errors import ConfigError, RunFailedError
from memlab.registry import CLAIMS
from memlab.reproduce import Claim, Result
from memlab.reproduce.claim import load_result
from memlab.reproduce.readme import END, START, claims_table, update_readme
from memlab.reproduce.run import claim_names, get_claim, reproduce
from memlab.sweep import Sweep, grid
from memlab.sweep import launch as sweep_launch
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
    with pytest.raises(ConfigError, match="reproduced, partly, not reproduced"):
        _result(verdict="mostly")
    with pytest.raises(ConfigError, match="scale"):
        _result(scale="laptop")
    with pytest.raises(TypeError):
        _result(details={"bad": object()})


def test_result_round_trips_and_renders(tmp_path):
    result = _result()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(result.to_json()))
    assert load_result(path) == result
    text = result.to_markdown()
    for part in ("about 0.6", "0.31 [0.28, 0.35]", "**Verdict: not reproduced**", "within 0.15", "![c.png](c.png)"):
        assert part in text


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

    def sweeps(self, scale, runs):
        base = {**BASE, "train.steps": 10, "train.eval_every": 10, "train.checkpoint_every": 10}
        return [Sweep(name="tiny", experiment=str(ROOT / "experiments" / "mqar.py"), base=base, points=grid({}))]

    def evaluate(self, runs, scale, out):
        from memlab.analysis import load_runs

        frame = load_runs(runs / "tiny")
        accuracy = float(frame["eval/accuracy"].iloc[0])
        (out / "test-tiny.png").write_bytes(b"png")
        return Result(
            claim=self.name,
            title=self.title,
            source=self.source,
            source_number="above 0",
            measured=f"{accuracy:.3f}",
            criterion="accuracy > 0",
            verdict="reproduced" if accuracy > 0 else "not reproduced",
            scale=scale,
            command=self.command(scale),
            details={"accuracy": accuracy, "runs": len(frame)},
            figures=["test-tiny.png"],
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
    run_dir = workdir / tiny_claim / "tiny" / "tiny"
    assert sweep_launch.run_status(run_dir) == "completed"
    assert load_result(out / f"{tiny_claim}.json") == result
    assert result.measured in (out / f"{tiny_claim}.md").read_text()
    assert result.command == "memlab reproduce test-tiny --scale cpu" and result.details["runs"] == 1

    summary = (run_dir / "summary.json").read_text()
    again = reproduce(tiny_claim, out=out, workdir=workdir)
    assert "0 to run, 1 already completed" in capsys.readouterr().out
    assert (run_dir / "summary.json").read_text() == summary  # not trained again
    assert again == result


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
    result = get_claim("epoch-chinchilla").evaluate(tmp_path, "cpu", tmp_path)
    assert result.verdict == "reproduced", result.table
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


def test_reproduce_all_runs_every_claim_in_order_and_updates_the_readme(tmp_path, monkeypatch, capsys):
    import memlab.reproduce.run as run_module

    done = []

    def fake(name, *, out, **options):
        done.append((name, options["scale"]))
        result = _result(claim=name, verdict="partly")
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result.to_json()))
        return result

    monkeypatch.setattr(run_module, "reproduce", fake)
    monkeypatch.chdir(tmp_path)
    Path("README.md").write_text(f"# r\n{START}\n{END}\n")
    assert cli.main(["reproduce", "all", "--out", "res", "--scale", "paper"]) == 0
    assert done == [(name, "paper") for name in claim_names()]
    assert "updated the claims table" in capsys.readouterr().out
    assert "[mqar-mixers.md](res/mqar-mixers.md)" in Path("README.md").read_text()
