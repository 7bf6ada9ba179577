"""Sharding on 8 fake CPU devices (transformer and Gated DeltaNet LMs) (each case runs tests/drivers/sharding.py in a
fresh process, since the device count is fixed when jax starts): loss curves equal the single-device run, kernels
under shard_map equal the single-device op, parameter shardings follow the rules, a mesh that does not divide the
devices is rejected. Checkpoints across meshes and the two-process run: tests/test_sharding_checkpoints.py."""

import json
import subprocess

import numpy as np
import pytest

from tests.helpers import ROOT, drive, driver_command, fake_devices_env

pytestmark = pytest.mark.slow  # each case runs driver processes on fake devices


@pytest.fixture(scope="module")
def single_device_gdn(tmp_path_factory):
    return drive("train", str(tmp_path_factory.mktemp("single_gdn")), "1,1,1", "model.mixers=gdn")["losses"]


# Mesh (8,1,1) is checked by tests/test_sharding_checkpoints.py, whose restore test trains on it anyway.
@pytest.mark.parametrize("mesh", ["2,4,1", "2,2,2"])
def test_sharded_training_matches_one_device(single_device, mesh, tmp_path):
    result = drive("train", str(tmp_path), mesh)
    assert result["devices"] == 8 and len(result["losses"]) == len(single_device) == 20
    np.testing.assert_allclose(result["losses"], single_device, rtol=1e-5)


# No (8,1,1) case: under (2,4,1) the GDN kernel's shard_map sees the same per-device blocks (batch split 8 ways over
# data x fsdp, all heads), with fsdp-sharded parameters on top; the pure data-parallel path of the trainer is the
# attention LM's (8,1,1) run in tests/test_sharding_checkpoints.py.
@pytest.mark.parametrize("mesh", ["2,4,1", "2,2,2"])
def test_sharded_gdn_matches_one_device(single_device_gdn, mesh, tmp_path):
    result = drive("train", str(tmp_path), mesh, "model.mixers=gdn")
    np.testing.assert_allclose(result["losses"], single_device_gdn, rtol=1e-5)


@pytest.fixture(scope="module")
def kernels_on_2_2_2():
    """Both backends in one driver process (one start-up instead of two): {backend: result}."""
    return drive("kernels", "-", "2,2,2", "chunked", "pallas")


@pytest.mark.parametrize("backend", ["chunked", "pallas"])
def test_kernels_under_shard_map_match_one_device(kernels_on_2_2_2, backend):
    """Heads over "tensor", batch over ("data", "fsdp"): each device runs the kernel on its block; forward and all
    gradients equal the single-device op."""
    out = kernels_on_2_2_2[backend]
    assert out["spec"][:3] == [["data", "fsdp"], None, "tensor"]
    assert out["output"] < 1e-5
    assert max(out["grads"]) < 1e-5, out["grads"]


def test_parameter_shardings_follow_the_rules():
    custom_rules = "mesh.rules=(('embed', ''), ('heads', 'tensor'), ('mlp', 'fsdp,tensor'))"
    # the three configurations in one driver process: (2,2,2), (8,1,1), (2,2,2) with custom rules
    specs, replicated, custom = drive("shardings", "-", "2,2,2;8,1,1;2,2,2", "[]", "[]", json.dumps([custom_rules]))[
        "specs"
    ]
    assert specs["blocks/0/mixer/q/kernel"] == ["fsdp", "tensor"]  # (embed, heads)
    assert specs["blocks/0/mixer/o/kernel"] == ["tensor", "fsdp"]  # (heads, embed)
    assert specs["blocks/1/mlp/down/kernel"] == ["tensor", "fsdp"]  # (mlp, embed)
    assert specs["embed/embedding"] == ["tensor", "fsdp"]  # (vocab, embed)
    assert specs["final_norm/scale"] == ["fsdp"]
    assert replicated["blocks/0/mixer/q/kernel"] == ["fsdp", "tensor"]  # pure data parallel: fsdp/tensor size 1
    assert custom["blocks/0/mixer/q/kernel"] == [None, "tensor"]
    assert custom["blocks/0/mlp/up/kernel"] == [None, ["fsdp", "tensor"]]


def test_mesh_that_does_not_divide_devices_is_rejected(tmp_path):
    out = subprocess.run(
        driver_command("train", str(tmp_path), "3,1,1"),
        cwd=ROOT,
        env=fake_devices_env(8),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0 and "(product 3) do not divide the 8 available devices" in out.stderr
