"""Sharding on 8 fake CPU devices (transformer and Gated DeltaNet LMs) (each case runs tests/sharding_driver.py in a fresh process, since the device
count is fixed when jax starts): loss curves equal the single-device run, parameter shardings follow the rules,
checkpoints restore across meshes, and a two-process jax.distributed run trains, checkpoints and resumes."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

DRIVER = str(ROOT / "tests" / "sharding_driver.py")


def drive(*args: str, devices: int = 8, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           **(extra_env or {})}
    out = subprocess.run([sys.executable, DRIVER, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def rollback(run_dir, step: int) -> None:
    """Make a finished run look like it died right after its checkpoint at `step`."""
    for d in (run_dir / "checkpoints").iterdir():
        if d.name.isdigit() and int(d.name) > step:
            shutil.rmtree(d)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running", "step": step}))


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    return drive("train", str(tmp_path_factory.mktemp("single")), "1,1,1")["losses"]


@pytest.fixture(scope="module")
def single_device_gdn(tmp_path_factory):
    return drive("train", str(tmp_path_factory.mktemp("single_gdn")), "1,1,1", "model.mixers=gdn")["losses"]


@pytest.mark.parametrize("mesh", ["8,1,1", "2,4,1", "2,2,2"])
def test_sharded_training_matches_one_device(single_device, mesh, tmp_path):
    result = drive("train", str(tmp_path), mesh)
    assert result["devices"] == 8 and len(result["losses"]) == len(single_device) == 20
    np.testing.assert_allclose(result["losses"], single_device, rtol=1e-5)


@pytest.mark.parametrize("mesh", ["8,1,1", "2,4,1", "2,2,2"])
def test_sharded_gdn_matches_one_device(single_device_gdn, mesh, tmp_path):
    result = drive("train", str(tmp_path), mesh, "model.mixers=gdn")
    np.testing.assert_allclose(result["losses"], single_device_gdn, rtol=1e-5)


@pytest.mark.parametrize("backend", ["chunked", "pallas"])
def test_kernels_under_shard_map_match_one_device(backend, tmp_path):
    """Heads over "tensor", batch over ("data", "fsdp"): each device runs the kernel on its block; forward and all
    gradients equal the single-device op."""
    out = drive("kernels", str(tmp_path), "2,2,2", backend)
    assert out["spec"][:3] == [["data", "fsdp"], None, "tensor"]
    assert out["output"] < 1e-5
    assert max(out["grads"]) < 1e-5, out["grads"]


def test_parameter_shardings_follow_the_rules():
    specs = drive("shardings", "-", "2,2,2")["specs"]
    assert specs["blocks/0/mixer/q/kernel"] == ["fsdp", "tensor"]      # (embed, heads)
    assert specs["blocks/0/mixer/o/kernel"] == ["tensor", "fsdp"]      # (heads, embed)
    assert specs["blocks/1/mlp/down/kernel"] == ["tensor", "fsdp"]     # (mlp, embed)
    assert specs["embed/embedding"] == ["tensor", "fsdp"]              # (vocab, embed)
    assert specs["final_norm/scale"] == ["fsdp"]
    replicated = drive("shardings", "-", "8,1,1")["specs"]             # pure data parallel: fsdp/tensor size 1
    assert replicated["blocks/0/mixer/q/kernel"] == ["fsdp", "tensor"]
    custom = drive("shardings", "-", "2,2,2", "mesh.rules=(('embed', ''), ('heads', 'tensor'), ('mlp', 'fsdp,tensor'))")["specs"]
    assert custom["blocks/0/mixer/q/kernel"] == [None, "tensor"]
    assert custom["blocks/0/mlp/up/kernel"] == [None, ["fsdp", "tensor"]]


def test_mesh_that_does_not_divide_devices_is_rejected(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, DRIVER, "train", str(tmp_path), "3,1,1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "(product 3) do not divide the 8 available devices" in out.stderr


def test_checkpoint_restores_across_meshes(single_device, tmp_path):
    drive("train", str(tmp_path), "8,1,1")
    rollback(tmp_path, 10)
    resumed = drive("train", str(tmp_path), "2,2,1", devices=8)["losses"]   # 8 devices -> 4, data -> fsdp
    np.testing.assert_allclose(resumed, single_device, rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir) -> list[dict]:
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, DRIVER, "train", str(workdir), "-1,1,1",
                               f"mesh.coordinator_address='127.0.0.1:{port}'", "mesh.num_processes=2",
                               f"mesh.process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]


def test_two_process_run_trains_checkpoints_and_resumes(single_device, tmp_path):
    first = _two_processes(tmp_path)
    assert first[0]["devices"] == 4 and first[0]["processes"] == 2
    np.testing.assert_allclose(first[0]["losses"], single_device, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["10", "20"]
    rollback(tmp_path, 10)
    again = _two_processes(tmp_path)
    np.testing.assert_allclose(again[0]["losses"], single_device, rtol=1e-5)
