"""Sweeps: expansion and naming, derived values and ladders, bad axes, idempotent relaunch, resume of an
interrupted run, live progress read from run directories, the submitit local executor, the W&B export,
`memlab status`, and no import cycle through the CLI."""

import ast
import io
import json
import os
import re
import subprocess
import textwrap
import time

import pytest
from rich.console import Console

from memlab.config import ConfigError
from memlab.sweep import Sweep, chain, grid, ladder, points, product, zipped
from memlab.sweep.estimate import estimate
from memlab.sweep.launch import launch_submitit, plan, run_status, train_argv
from memlab.sweep.progress import SweepProgress, tail_metrics
from memlab.sweep.spec import expand, load_sweep, sweep_id
from memlab.sweep.status import STALE_SECONDS, run_rows
from tests.helpers import ROOT, TINY, memlab_cmd

EXPERIMENT = str(ROOT / "experiments" / "mqar.py")
BASE = {
    t.split("=")[0]: eval(t.split("=")[1])
    if t.split("=")[1][0].isdigit() or t.split("=")[1] in ("False", "True")
    else t.split("=")[1]
    for t in TINY
}


def test_axis_builders():
    assert grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert zipped({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(ValueError, match="equal lengths"):
        zipped({"a": [1, 2], "b": [3]})
    assert product(points({"a": 1}), grid({"b": [1, 2]})) == [{"a": 1, "b": 1}, {"a": 1, "b": 2}]
    assert len(chain(grid({"a": [1, 2]}), points({"b": 3}))) == 3
    assert ladder([(32, 2), (64, 4)], [1e5, 2e5])[3] == {"model.d_model": 64, "model.num_layers": 4, "@tokens": 2e5}


def test_expansion_names_ids_and_derived_values():
    sweep = Sweep(
        name="t",
        experiment=EXPERIMENT,
        base=BASE,
        points=product(grid({"model.d_model": [32, 64]}), grid({"@ratio": [2, 4]})),
        derive=lambda p: {"data.num_kv_pairs": p["@ratio"] * 2},
    )
    pts = expand(sweep, launch_id="L1")
    assert [p.name for p in pts] == [
        "d_model=32-ratio=2",
        "d_model=32-ratio=4",
        "d_model=64-ratio=2",
        "d_model=64-ratio=4",
    ]
    assert [p.config.data.num_kv_pairs for p in pts] == [4, 8, 4, 8]
    for p in pts:
        assert p.config.logging.sweep_id == sweep_id(sweep) and p.config.logging.launch_id == "L1"
        assert p.config.logging.run_name == p.name and p.config.logging.group == "t"
        with pytest.raises(AttributeError):
            p.config.model.oops = 1  # locked
    assert sweep_id(sweep) == sweep_id(Sweep(name="t", experiment=EXPERIMENT, base=BASE, points=sweep.points))


def test_ladder_turns_token_budget_into_steps():
    sweep = Sweep(name="lad", experiment=EXPERIMENT, base=BASE, points=ladder([(32, 2), (64, 2)], [2560, 5120]))
    pts = expand(sweep)
    # 8 examples x 32 tokens = 256 tokens per step
    assert [p.config.train.steps for p in pts] == [10, 20, 10, 20]
    assert pts[1].name == "d_model=32-tokens=5120"


def test_flops_budget_and_evaluation_count_set_the_schedule():
    """`@flops` ends each schedule at the budget whatever the model's cost; `@evals` spreads evaluations over it."""
    widths = [{"model.d_model": d, "@flops": 4e10, "@evals": 4} for d in (32, 64)]
    pts = expand(Sweep(name="budget", experiment=EXPERIMENT, base=BASE, points=widths))
    for p in pts:
        spent = estimate(p.config)["flops"]
        assert abs(spent / 4e10 - 1) < 1 / p.config.train.steps, (p.name, spent)
        assert p.config.train.eval_every == p.config.train.steps // 4
    assert pts[0].config.train.steps > 2 * pts[1].config.train.steps  # the narrower model gets more steps
    both = [{"model.d_model": 32, "@flops": 4e10, "@tokens": 1e5}]
    with pytest.raises(ConfigError, match="both @tokens and @flops"):
        expand(Sweep(name="two", experiment=EXPERIMENT, base=BASE, points=both))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"model.d_modle": [32, 64]}, r"axis 'model.d_modle': unknown config key .*did you mean model.d_model"),
        ({"model.mixers": ["attn", "nope"]}, r"point 'mixers=nope'.*unknown mixer"),
    ],
)
def test_bad_axis_fails_before_anything_runs(bad, match, tmp_path):
    sweep = Sweep(name="bad", experiment=EXPERIMENT, base=BASE, points=grid(bad))
    with pytest.raises(ConfigError, match=match):
        plan(sweep, tmp_path, "L")
    assert not any(tmp_path.iterdir())


def test_chained_groups_name_only_their_own_axes():
    sweep = Sweep(
        name="ch",
        experiment=EXPERIMENT,
        base=BASE,
        points=chain(grid({"model.mixers": ["attn"]}), grid({"model.mixers": ["gdn"], "model.matrix_expand_v": [2.0]})),
    )
    assert [p.name for p in expand(sweep)] == ["mixers=attn", "mixers=gdn-matrix_expand_v=2"]


def test_duplicate_names_rejected():
    sweep = Sweep(
        name="dup", experiment=EXPERIMENT, base=BASE, points=points({"model.d_model": 32}, {"model.d_model": 32})
    )
    with pytest.raises(ConfigError):
        expand(sweep)


@pytest.fixture
def sweep_file(tmp_path):
    """Two points that differ only in the data seed: both train the tiny config of tests/conftest.py, so the
    runs below compile its programs once (test_submitit_local_executor, first, does it) and then hit the
    session's compilation cache, however many processes they start."""
    path = tmp_path / "tiny_sweep.py"
    path.write_text(
        textwrap.dedent(f"""
        from memlab.sweep import Sweep, grid
        def get_sweep():
            return Sweep(name="tiny", experiment={EXPERIMENT!r}, base={BASE!r},
                         points=grid({{"data.seed": [0, 1]}}))
    """)
    )
    return path


@pytest.mark.slow
def test_submitit_local_executor(sweep_file, tmp_path):
    sweep = load_sweep(sweep_file)
    todo, _ = plan(sweep, tmp_path, "L")
    jobs = launch_submitit(todo[:1], tmp_path, cluster="local", timeout_min=10)
    assert jobs[0].result() == 0
    assert run_status(tmp_path / todo[0].name) == "completed"


@pytest.mark.slow
def test_launch_is_idempotent_and_resumes_interrupted(sweep_file, tmp_path):
    workdir = tmp_path / "runs"
    out = subprocess.run(
        memlab_cmd("sweep", str(sweep_file), "--workdir", str(workdir), "--parallel", "2"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "2 to run, 0 already completed" in out.stdout
    # not a terminal: plain progress lines, one per finished run with its last numbers, and a closing count
    finished = re.findall(
        r"^\[sweep\] done (seed=\d) step 20/20 loss \d+\.\d{4} acc \d\.\d{3} \| (\d)/2 runs done", out.stdout, re.M
    )
    assert sorted(name for name, _ in finished) == ["seed=0", "seed=1"], out.stdout
    assert sorted(count for _, count in finished) == ["1", "2"]
    assert re.search(r"^\[sweep\] 2/2 runs done in \d+:\d\d:\d\d$", out.stdout, re.M), out.stdout
    assert all(run_status(workdir / n) == "completed" for n in ("seed=0", "seed=1"))
    meta = json.loads((workdir / "sweep.json").read_text())
    assert meta["axes"] == {"data.seed": [0, 1]} and meta["runs"] == ["seed=0", "seed=1"]

    # interrupt one run: roll it back to its step-10 checkpoint as if it died there
    victim = workdir / "seed=1"
    for step_dir in (victim / "checkpoints").iterdir():
        if step_dir.name == "20":
            import shutil

            shutil.rmtree(step_dir)
    summary = json.loads((victim / "summary.json").read_text())
    (victim / "summary.json").write_text(json.dumps({**summary, "status": "running", "step": 10}))
    final_before = summary["train/loss"]

    again = subprocess.run(
        memlab_cmd("sweep", str(sweep_file), "--workdir", str(workdir)), cwd=ROOT, capture_output=True, text=True
    )
    assert "1 to run, 1 already completed" in again.stdout
    resumed = json.loads((victim / "summary.json").read_text())
    assert resumed["status"] == "completed" and abs(resumed["train/loss"] - final_before) < 1e-6
    log = (victim / "train.log").read_text()
    assert "resuming" in log and "from step 10" in log

    third = subprocess.run(
        memlab_cmd("sweep", str(sweep_file), "--workdir", str(workdir)), cwd=ROOT, capture_output=True, text=True
    )
    assert "0 to run, 2 already completed" in third.stdout  # a second launch starts nothing
    assert len(json.loads((workdir / "sweep.json").read_text())["launches"]) == 3

    status = subprocess.run(memlab_cmd("status", str(workdir)), cwd=ROOT, capture_output=True, text=True)
    assert "2 completed" in status.stdout and "seed=0" in status.stdout


@pytest.mark.slow
def test_wandb_export_and_point_command(sweep_file, tmp_path):
    export = tmp_path / "wandb_sweep.json"
    out = subprocess.run(
        memlab_cmd("sweep", str(sweep_file), "--workdir", str(tmp_path / "w"), "--wandb-export", str(export)),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(export.read_text())
    assert config["method"] == "grid" and config["parameters"]["point"]["values"] == ["seed=0", "seed=1"]
    assert config["command"][-1] == "${args}" and "sweep-point" in config["command"]
    # what a W&B agent runs for one point: the command with --point=NAME
    cmd = [c for c in config["command"][2:-1]]
    run = subprocess.run(memlab_cmd(*cmd[2:], "--point=seed=0"), cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run_status(tmp_path / "w" / "seed=0") == "completed"


def test_train_argv_round_trips_values(sweep_file):
    from memlab.config import load_config

    point = expand(load_sweep(sweep_file), launch_id="L")[1]
    argv = train_argv(point, ROOT / "x")
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert load_config(point.experiment, sets).to_dict() == point.config.to_dict()


def _write_run(run_dir, summary: dict, rows: list[dict], tail: str = "") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_sweep_progress_from_run_directories(tmp_path, capsys):
    """What a local sweep shows while it runs, read from synthetic run directories on a fake clock: runs done of
    total, a running run's step and latest loss and accuracy, a run that has not reported yet, and the ETAs."""
    t = time.time()
    now = [t - 100]
    _write_run(tmp_path / "b", {"status": "interrupted", "step": 10, "steps": 20}, [])  # resumes from step 10
    progress = SweepProgress(tmp_path, {"a": 20, "b": 20, "c": 20}, live=False, every=30, clock=lambda: now[0])
    progress.started("a")
    progress.started("b")
    _write_run(
        tmp_path / "a",
        {"status": "running", "step": 0, "steps": 20},  # the step it started from
        [
            {"step": 5, "train/loss": 4.0},
            {"step": 10, "train/loss": 3.5, "eval/accuracy": 0.125},
            {"step": 15, "train/loss": 3.25},
        ],
        tail='{"step": 1',
    )  # a torn last line is skipped
    os.utime(tmp_path / "b" / "summary.json", (t - 200, t - 200))  # its process has not written yet
    now[0] = t - 70
    # a: 15 steps in 30 s, 5 to go -> 10 s; the sweep: 15 steps done in 30 s, 5 + 10 + 20 to go -> 70 s
    line = "0/3 runs done, 2 running, eta 0:01:10 | a step 15/20 loss 3.2500 acc 0.125 eta 0:00:10 | b starting"
    view = progress.view()
    assert (view.steps_done, view.steps_left) == (15, 35) and view.line() == line
    progress.tick()
    now[0] = t - 69
    progress.tick()  # within `every` seconds of the last line: silent
    _write_run(tmp_path / "a", {"status": "completed", "step": 20, "steps": 20}, [{"step": 20, "train/loss": 3.0}])
    progress.finished("a", 0)
    progress.finished("b", 1)
    assert capsys.readouterr().out.splitlines() == [
        "[sweep] start a",
        "[sweep] start b",
        f"[sweep] {line}",
        "[sweep] done a step 20/20 loss 3.0000 acc 0.125 | 1/3 runs done, 1 running, eta 0:00:46",
        f"[sweep] FAILED (exit 1, see {tmp_path}/b/train.log) b step 10/20 | 2/3 runs done (1 failed)",
    ]

    big = tmp_path / "big.jsonl"  # only the tail is read: the accuracy logged long ago is not found
    big.write_text(
        json.dumps({"eval/accuracy": 0.5})
        + "\n"
        + "".join(json.dumps({"step": i, "train/loss": 1.0 / i}) + "\n" for i in range(1, 2000))
    )
    assert tail_metrics(big, ["train/loss", "eval/accuracy"]) == {"train/loss": 1.0 / 1999}

    out = io.StringIO()  # on a terminal: rich bars, and the same line per finished run above them
    with SweepProgress(
        tmp_path, {"a": 20}, title="sweep t", console=Console(file=out, force_terminal=True, width=160)
    ) as live:
        assert live.live
        live.started("a")
        _write_run(tmp_path / "a", {"status": "running", "step": 5, "steps": 20}, [{"step": 5, "train/loss": 3.0}])
        live.tick()
        live.finished("a", 0)
    shown = out.getvalue()
    assert "sweep t" in shown and "5/20" in shown and "[sweep] done a step 5/20 loss 3.0000" in shown
    assert "[sweep] 1/1 runs done in 0:00:0" in shown


def test_status_of_a_running_run(tmp_path):
    """`memlab status` takes a running run's step from its newest metrics row (summary.json holds the step it
    started from), and calls it stale only when neither file has changed for STALE_SECONDS."""
    run = tmp_path / "a"
    _write_run(run, {"status": "running", "step": 0, "steps": 20}, [{"step": 15, "train/loss": 3.0}])
    (run / "config.json").write_text("{}")
    old = time.time() - 2 * STALE_SECONDS
    os.utime(run / "summary.json", (old, old))
    assert [(r["state"], r["step"]) for r in run_rows(tmp_path)] == [("running", 15)]
    os.utime(run / "metrics.jsonl", (old, old))
    assert [(r["state"], r["step"]) for r in run_rows(tmp_path)] == [("stale", 15)]


def test_sweep_never_imports_the_cli():
    """memlab.cli registers the sweep's commands, so a sweep module importing it, even inside a function, closes an
    import cycle; jobs that train in-process go through memlab.entry with the train commands only."""
    for path in [*(ROOT / "memlab" / "sweep").glob("*.py"), ROOT / "memlab" / "entry.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            assert "memlab.cli" not in names, f"{path.name}:{node.lineno} imports memlab.cli"
