"""Sharded checkpoints on fake CPU devices (each run is tests/drivers/sharding.py in a fresh process, since the
device count is fixed when jax starts): a data-parallel run on 8 devices equals the single-device run and its
checkpoint restores onto another mesh; a two-process jax.distributed run trains, checkpoints and resumes."""

import json
import socket
import subprocess

import numpy as np
import pytest

from tests.helpers import ROOT, drive, driver_command, fake_devices_env, rollback

pytestmark = pytest.mark.slow  # each case runs driver processes on fake devices


def test_data_parallel_matches_one_device_and_checkpoint_restores_across_meshes(single_device, tmp_path):
    """Also the (8,1,1) case of test_sharding.py::test_sharded_training_matches_one_device: the same run."""
    result = drive("train", str(tmp_path), "8,1,1")
    assert result["devices"] == 8 and len(result["losses"]) == len(single_device) == 20
    np.testing.assert_allclose(result["losses"], single_device, rtol=1e-5)
    rollback(tmp_path, 10)
    resumed = drive("train", str(tmp_path), "2,2,1", devices=8)["losses"]  # 8 devices -> 4, data -> fsdp
    np.testing.assert_allclose(resumed, single_device, rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir) -> list[dict]:
    port = _free_port()
    env = fake_devices_env(2)
    procs = [
        subprocess.Popen(
            driver_command(
                "train",
                str(workdir),
                "-1,1,1",
                f"mesh.coordinator_address='127.0.0.1:{port}'",
                "mesh.num_processes=2",
                f"mesh.process_id={i}",
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
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
