"""Training end to end: run directory contents, determinism, resume after SIGKILL, corrupt-checkpoint fallback,
NaN stop, gradient accumulation, schedules, W&B offline files and no leaked secrets."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from memlab.data.tasks import TASKS
from memlab.data.tasks.mqar import MQAR
from memlab.train.loop import Interrupted, NonFiniteError, train
from memlab.train.step import learning_rate_schedule, warmup_steps
from tests.helpers import ROOT, TINY, memlab_cmd


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in rows(run_dir) if "train/loss" in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny run (20 steps, checkpoints at 10 and 20) and its summary, shared by the tests that need a
    finished run of the default tiny config; they read it, or copy it before changing it."""
    from memlab.config import load_config

    run_dir = tmp_path_factory.mktemp("reference")
    return run_dir, train(load_config(ROOT / "experiments" / "mqar.py", [*TINY, "train.xla_flops=True"]), run_dir)


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_run_directory_contract(reference):
    tmp_path, summary = reference
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["d_model"] == 32
    assert {"git_commit", "packages", "device_kind", "created"} <= set(config["stamps"])
    assert config["stamps"]["packages"]["jax"]
    metrics = rows(tmp_path)
    assert [r["step"] for r in metrics] == [5, 10, 15, 20]
    for r in metrics:
        assert {"step", "tokens", "flops", "train/loss", "lr", "grad_norm", "tokens_per_s"} <= set(r)
        assert r["tokens"] == r["step"] * 8 * 32
    assert {"eval/loss", "eval/accuracy"} <= set(metrics[1]) and {"eval/loss", "eval/accuracy"} <= set(metrics[3])
    assert np.all(np.diff([r["flops"] for r in metrics]) > 0)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["error"] is None and on_disk["step"] == 20
    for key in (
        "params",
        "params_non_embedding",
        "flops_per_token",
        "flops_per_token_xla",
        "eval/loss",
        "eval/accuracy",
        "wall_seconds",
        "compile_seconds",
        "flops",
    ):
        assert on_disk[key] is not None, key
    assert on_disk["eval/loss"] == metrics[-1]["eval/loss"] == summary["eval/loss"]
    assert on_disk == summary  # train() returns exactly what it wrote
    assert not list(tmp_path.glob("*.tmp"))  # every file was written through a temp file and renamed
    assert on_disk["state_size"] == 2 * (2 * 32 * 32)  # two attention layers' key and value caches, T=32, d=32
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]


def test_same_config_same_numbers(reference, tiny_config, tmp_path):
    summary = train(tiny_config("train.xla_flops=False"), tmp_path / "b")
    assert losses(reference[0]) == losses(tmp_path / "b")
    assert "flops_per_token_xla" not in summary  # the cross-check off changes no number, and is not measured


def test_resume_refuses_a_different_config(reference, tiny_config, tmp_path):
    from memlab.config import ConfigError

    run = copy_run(reference[0], tmp_path / "run")
    with pytest.raises(ConfigError, match="differs in model.d_model"):
        train(tiny_config("model.d_model=64"), run)


@pytest.mark.slow
def test_grad_accumulation_matches_full_batch(reference, tiny_config, tmp_path):
    train(tiny_config("train.grad_accum=2"), tmp_path / "accum")
    full, accum = losses(reference[0]), losses(tmp_path / "accum")
    np.testing.assert_allclose(list(accum.values()), list(full.values()), rtol=1e-4)


@pytest.mark.slow
def test_sigkill_and_resume_gives_identical_final_loss(tmp_path):
    # Killed once its checkpoint at step 20 or 40 exists: >= 80 steps (about 2 s on 2 busy cores) still to go,
    # so it dies mid-run with checkpoints and an eval both before and after the kill.
    args = [*TINY, "train.steps=120", "train.checkpoint_every=20", "train.eval_every=40"]
    cmd = lambda wd: memlab_cmd(
        "train", str(ROOT / "experiments" / "mqar.py"), "--workdir", str(wd), *sum((["--set", a] for a in args), [])
    )
    from memlab.config import load_config

    train(load_config(ROOT / "experiments" / "mqar.py", args), tmp_path / "ref")  # what `memlab train` runs

    victim = subprocess.Popen(cmd(tmp_path / "killed"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpt.exists() and any(p.name in ("20", "40") for p in ckpt.iterdir())):
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["status"] == "running" and summary["step"] < 120  # really died mid-run
    wandb_id = summary["wandb_run_id"]

    subprocess.run(cmd(tmp_path / "killed"), check=True, cwd=ROOT, capture_output=True)
    ref, resumed = rows(tmp_path / "ref"), rows(tmp_path / "killed")
    assert [r["step"] for r in resumed] == [r["step"] for r in ref]  # no duplicated or missing rows
    ref_final = json.loads((tmp_path / "ref" / "summary.json").read_text())
    res_final = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert res_final["status"] == "completed"
    assert res_final["wandb_run_id"] == wandb_id  # the resumed run continues the same W&B run
    assert abs(res_final["train/loss"] - ref_final["train/loss"]) <= 1e-6
    assert abs(res_final["eval/loss"] - ref_final["eval/loss"]) <= 1e-6
    np.testing.assert_allclose([r["train/loss"] for r in resumed], [r["train/loss"] for r in ref], atol=1e-6)


def test_corrupt_latest_checkpoint_falls_back(reference, tiny_config, tmp_path, caplog):
    reference_dir, reference = reference
    copy_run(reference_dir, tmp_path / "run")  # a finished run; test_same_config_same_numbers: = a fresh one
    damaged = [f for f in (tmp_path / "run" / "checkpoints" / "20" / "state").rglob("*") if f.is_file()]
    assert damaged
    for f in damaged:
        f.write_bytes(b"\x00garbage" * 4)
    (tmp_path / "run" / "summary.json").unlink()
    with caplog.at_level("WARNING", logger="memlab"):
        summary = train(tiny_config(), tmp_path / "run")
    assert "checkpoint at step 20 is unreadable" in caplog.text
    assert (tmp_path / "run" / "corrupt_checkpoints" / "20").is_dir()
    assert summary["status"] == "completed" and summary["step"] == 20
    assert abs(summary["train/loss"] - reference["train/loss"]) <= 1e-6  # retrained 10..20 from step 10


@pytest.fixture
def nan_task():
    """MQAR whose loss mask turns NaN from example 120 on (the 16th step at batch 8): a NaN in the loss."""

    class NaNAfter(MQAR):
        def __getitem__(self, index):
            ex = super().__getitem__(index)
            if index >= 120:
                ex["loss_mask"] = ex["loss_mask"] * np.float32("nan")
            return ex

    TASKS.register("mqar_nan_test")(NaNAfter)
    yield "mqar_nan_test"
    TASKS.unregister("mqar_nan_test")


def test_nan_stops_run_and_keeps_last_good_checkpoint(tiny_config, tmp_path, nan_task):
    with pytest.raises(NonFiniteError, match="non-finite loss or gradient at step 16"):
        train(tiny_config(f"data.task={nan_task}"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["error"]
    # the summary says how far the run got: its last good step and the compute spent up to there
    assert summary["step"] == 15 and summary["flops"] == pytest.approx(15 * 8 * summary["flops_per_example"])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [10]
    assert all(r["step"] <= 15 for r in rows(tmp_path))


@pytest.fixture
def sigterm_task():
    """MQAR that sends this process SIGTERM when example 80 is read (prefetching reads it a few steps early), as a
    scheduler would."""

    class TermAt(MQAR):
        def __getitem__(self, index):
            if index == 80:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__getitem__(index)

    TASKS.register("mqar_sigterm_test")(TermAt)
    yield "mqar_sigterm_test"
    TASKS.unregister("mqar_sigterm_test")


def test_sigterm_checkpoints_and_records_how_far_it_got(tiny_config, tmp_path, sigterm_task):
    with pytest.raises(Interrupted, match=r"stopped by signal 15 at step (\d+)") as err:
        train(tiny_config(f"data.task={sigterm_task}"), tmp_path)
    stopped = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == stopped < 20
    assert summary["flops"] == pytest.approx(stopped * 8 * summary["flops_per_example"])
    assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == stopped


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_and_end_where_expected(tiny_config, schedule):
    tc = tiny_config(f"train.schedule={schedule}", "train.steps=100", "train.warmup_steps=10", "train.lr=1.0").train
    lr = learning_rate_schedule(tc)
    assert float(lr(0)) == 0.0 and abs(float(lr(10)) - 1.0) < 1e-6
    end = {"cosine": 0.1, "wsd": 0.1, "constant": 1.0}[schedule]
    assert abs(float(lr(100)) - end) < 1e-6
    if schedule == "wsd":
        assert float(lr(79)) == 1.0 and float(lr(90)) < 1.0


def test_warmup_past_the_last_step_is_clipped_with_a_warning(tiny_config, caplog):
    # a smoke run of an experiment tuned for more steps: `--set train.steps=30` under a warmup of 50
    tc = tiny_config("train.steps=30", "train.warmup_steps=50", "train.lr=1.0").train
    with caplog.at_level("WARNING", logger="memlab"):
        lr = learning_rate_schedule(tc)
    assert "train.warmup_steps=50 >= train.steps=30: warming up over 29 steps instead" in caplog.text
    assert warmup_steps(tc) == 29 and abs(float(lr(29)) - 1.0) < 1e-6 and float(lr(28)) < 1.0
    caplog.clear()
    with caplog.at_level("WARNING", logger="memlab"):
        assert warmup_steps(tiny_config("train.steps=30", "train.warmup_steps=29").train) == 29
    assert not caplog.text  # a warmup that fits is used as given, silently


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_warmup_fraction_is_a_share_of_the_steps(tiny_config, schedule):
    tc = tiny_config(
        f"train.schedule={schedule}",
        "train.steps=200",
        "train.warmup_fraction=0.1",
        "train.warmup_steps=50",
        "train.lr=1.0",
    ).train  # the fraction wins over warmup_steps
    lr = learning_rate_schedule(tc)
    assert warmup_steps(tc) == 20
    assert abs(float(lr(10)) - 0.5) < 1e-6 and abs(float(lr(20)) - 1.0) < 1e-6
    assert warmup_steps(tiny_config("train.steps=30", "train.warmup_fraction=0.99").train) == 29


@pytest.mark.parametrize(
    "override",
    ["train.warmup_steps=-1", "train.warmup_fraction=-0.1", "train.warmup_fraction=1.0", "train.warmup_fraction=1.5"],
)
def test_negative_warmup_or_a_fraction_outside_0_1_is_a_config_error(tiny_config, override):
    from memlab.errors import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        tiny_config(override)


def test_run_saved_before_keys_existed_still_resumes(reference, tiny_config, tmp_path):
    from memlab.train.loop import ADDED_KEYS

    run = copy_run(reference[0], tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    for group, key in ADDED_KEYS:  # config.json as runs wrote it before the keys were added
        saved[group].pop(key, None)
    (run / "config.json").write_text(json.dumps(saved))
    summary = train(tiny_config(), run)
    assert summary["status"] == "completed" and summary["step"] == 20


@pytest.mark.slow
def test_wandb_offline_files_and_no_secret_written(tmp_path):
    secret = "memlab-test-secret-0123456789abcdef0123456789"
    env = {**os.environ, "WANDB_API_KEY": secret}
    env.pop("WANDB_MODE", None)
    args = [a for a in TINY if not a.startswith("logging.wandb_mode")] + [
        "logging.wandb_mode=offline",
        "logging.group=g1",
        "logging.tags=x,y",
    ]
    cmd = memlab_cmd(
        "train",
        str(ROOT / "experiments" / "mqar.py"),
        "--workdir",
        str(tmp_path),
        *sum((["--set", a] for a in args), []),
    )
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(summary["wandb_run_id"])
    assert (runs[0] / f"run-{summary['wandb_run_id']}.wandb").stat().st_size > 0
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f"API key leaked into {f}"


def test_knobs_of_a_mixer_a_run_does_not_use_never_block_its_resume(tmp_path):
    """Every LM config carries every mixer's knobs: titans' changed defaults must not stop an attention run from
    resuming, while a titans run trained with another titans_depth is refused, naming the key."""
    from memlab.errors import ConfigError
    from memlab.train.loop import check_resumable
    from memlab.train.run_dir import RunDir

    def run_with(mixers: str) -> RunDir:
        path = tmp_path / mixers
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"model": {"mixers": mixers, "titans_depth": 1}}))
        return RunDir(path, writer=False)

    check_resumable(run_with("attn"), {"model": {"mixers": "attn", "titans_depth": 2}})
    with pytest.raises(ConfigError, match="model.titans_depth"):
        check_resumable(run_with("titans"), {"model": {"mixers": "titans", "titans_depth": 2}})
