"""memlab.store.MatrixMemory: exact recall, overwrite, forget, growth, snapshots, journal recovery after SIGKILL,
and the errors for bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memlab.store import CorruptStoreError, MatrixMemory, StoreError, memory_config
from tests.drivers import store_kill as driver
from tests.helpers import DRIVERS, ROOT


def orthonormal(n: int, d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q[:n].astype(np.float32)


def normal(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("rule", ["delta", "hebbian"])
def test_orthonormal_keys_recall_exactly(rule):
    memory = MatrixMemory(32, 12, rule=rule)
    keys, values = orthonormal(20, 32), normal(20, 12)
    memory.write(keys[:7], values[:7])
    memory.write(keys[7:], values[7:])
    np.testing.assert_allclose(memory.recall(keys), values, atol=1e-5)
    assert memory.utilisation() == pytest.approx(20 / 32, abs=1e-5)
    assert memory.saturation() == pytest.approx(20 / 32, abs=1e-4)


def test_delta_rule_overwrites_exactly_and_hebbian_superposes():
    keys, old, new = orthonormal(8, 16), normal(8, 4, seed=1), normal(8, 4, seed=2)
    for rule, want in (("delta", new), ("hebbian", old + new)):
        memory = MatrixMemory(16, 4, rule=rule)
        memory.write(keys, old)
        memory.write(keys[::-1], new[::-1])
        np.testing.assert_allclose(memory.recall(keys), want, atol=1e-5)
    assert memory.utilisation() == pytest.approx(16 / 16, abs=1e-5)  # Hebbian counts both writes


@pytest.mark.parametrize("rule", ["delta", "hebbian"])
def test_writes_follow_the_rule_pair_by_pair(rule):
    """alpha, beta < 1 and overlapping keys against a token-serial NumPy loop of the documented formula."""
    keys, values = normal(5, 6, seed=3), normal(5, 3, seed=4)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    alpha, beta = 0.9, 0.6
    S = np.zeros((3, 6))  # [V, K] orientation: recall is S q
    for k, v in zip(keys, values, strict=True):
        erase = np.eye(6) - beta * np.outer(k, k) if rule == "delta" else np.eye(6)
        S = alpha * S @ erase + beta * np.outer(v, k)
    memory = MatrixMemory(6, 3, rule=rule, growth_threshold=None)
    memory.write(keys, values, alpha=alpha, beta=beta)
    np.testing.assert_allclose(memory.matrix, S.T, atol=1e-5)


@pytest.mark.parametrize("rule", ["delta", "hebbian"])
def test_forget_removes_exactly_what_a_key_holds(rule):
    keys, values = orthonormal(10, 16), normal(10, 5)
    memory = MatrixMemory(16, 5, rule=rule)
    memory.write(keys, values)
    memory.forget(3.0 * keys[[2, 7]])  # any length: forget normalises
    recalled = memory.recall(keys)
    np.testing.assert_allclose(recalled[[2, 7]], 0, atol=1e-5)
    kept = [i for i in range(10) if i not in (2, 7)]
    np.testing.assert_allclose(recalled[kept], values[kept], atol=1e-5)
    assert memory.utilisation() == pytest.approx(8 / 16, abs=1e-5)
    assert memory.counts == {"writes": 10, "forgets": 2, "growths": 0}


def test_growth_keeps_everything_recallable():
    memory = MatrixMemory(16, 6, rule="delta")  # default threshold 0.85: 14 of 16 directions trigger growth
    keys, values = orthonormal(14, 16), normal(14, 6)
    memory.write(keys[:13], values[:13])
    assert memory.d_key == 16
    memory.write(keys[13:], values[13:])
    assert memory.d_key == 32 and memory.key_dims == [16, 32]
    assert memory.saturation() == pytest.approx(14 / 32, abs=1e-4)
    np.testing.assert_allclose(memory.recall(keys), values, atol=1e-5)  # old-size keys are read as [k; 0]
    new_keys = np.zeros((8, 32), np.float32)
    new_keys[:, 16:] = orthonormal(8, 16, seed=5)  # new keys in the new coordinates
    new_values = normal(8, 6, seed=6)
    memory.write(new_keys, new_values)
    np.testing.assert_allclose(memory.recall(keys), values, atol=1e-5)
    np.testing.assert_allclose(memory.recall(new_keys), new_values, atol=1e-5)


def test_save_load_round_trip_and_journal_after_snapshot(tmp_path):
    memory = MatrixMemory(16, 6, rule="hebbian")
    keys, values = orthonormal(16, 16), normal(16, 6)
    memory.write(keys[:2], values[:2])
    memory.save(tmp_path / "m")
    memory.write(keys[2:14], values[2:14])  # from here on journaled only; grows to 32
    memory.write(keys[14:], values[14:])
    memory.forget(keys[:1])
    loaded = MatrixMemory.load(tmp_path / "m")
    assert (loaded.rule, loaded.key_dims, loaded.d_value) == ("hebbian", [16, 32], 6)
    assert loaded.counts == memory.counts == {"writes": 16, "forgets": 1, "growths": 1}
    np.testing.assert_array_equal(loaded.matrix, memory.matrix)
    np.testing.assert_allclose(loaded.recall(keys[1:]), values[1:], atol=1e-5)
    loaded.save(tmp_path / "m")  # a second generation replaces the first and starts an empty journal
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["journal-2.wal", "manifest.json", "snapshot-2"]
    assert (tmp_path / "m" / "journal-2.wal").stat().st_size == 0
    np.testing.assert_array_equal(MatrixMemory.load(tmp_path / "m").matrix, memory.matrix)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", ["snapshot-1/state.zarr/0.0", "snapshot-1/occupancy.zarr/.zarray", "manifest.json"])
def test_a_flipped_byte_is_an_error(tmp_path, target):
    memory = MatrixMemory(8, 4)
    memory.write(orthonormal(3, 8), normal(3, 4))
    memory.save(tmp_path)
    memory.close()
    _flip_byte(tmp_path / target, 40)
    with pytest.raises(CorruptStoreError, match="corrupted"):
        MatrixMemory.load(tmp_path)


def test_journal_torn_tail_is_dropped_and_corruption_is_an_error(tmp_path):
    keys, values = orthonormal(4, 8), normal(4, 4)
    memory = MatrixMemory(8, 4)
    memory.save(tmp_path)
    memory.write(keys[:2], values[:2])
    memory.write(keys[2:], values[2:])
    memory.close()
    log = tmp_path / "journal-1.wal"
    full = log.read_bytes()
    log.write_bytes(full[:-10])  # the second record cut short, as a kill mid-append leaves it
    with pytest.warns(RuntimeWarning, match="torn last record"):
        loaded = MatrixMemory.load(tmp_path)
    np.testing.assert_allclose(loaded.recall(keys[:2]), values[:2], atol=1e-5)
    np.testing.assert_allclose(loaded.recall(keys[2:]), 0, atol=1e-5)
    loaded.close()
    assert len(log.read_bytes()) == len(full) // 2  # cut back to the last intact record
    log.write_bytes(full)
    _flip_byte(log, 60)  # inside the first record, with an intact one after it
    with pytest.raises(CorruptStoreError, match="journal .* is corrupted"):
        MatrixMemory.load(tmp_path)


def test_kill_during_writes_loses_no_acknowledged_write(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(DRIVERS / "store_kill.py"), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    acked = -1
    try:
        for line in proc.stdout:
            acked = int(line.split()[1])
            if acked >= 40:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
    acked = max([acked] + [int(line.split()[1]) for line in proc.stdout.read().splitlines()])
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and acked >= 40
    memory = MatrixMemory.load(tmp_path)  # a record torn by the kill is dropped with a warning
    recalled = memory.recall(np.eye(driver.D_KEY, dtype=np.float32))
    # every acknowledged batch is there; the batch in flight at the kill may be too (it was journaled)
    assert any(np.allclose(recalled, driver.expected(last), atol=1e-5) for last in (acked, acked + 1))
    assert memory.counts["writes"] in (2 * (acked + 1), 2 * (acked + 2))


def test_bad_input_is_a_clear_error():
    memory = MatrixMemory(8, 4)
    cases = [
        (lambda: memory.write(np.ones((2, 7), np.float32), np.ones((2, 4), np.float32)), r"keys .*\[N, 8\]"),
        (lambda: memory.write(np.ones((2, 8), np.float32), np.ones((3, 4), np.float32)), "3 rows but keys have 2"),
        (lambda: memory.write(np.ones(8, np.float32), np.ones(4, np.float32)), r"use x\[None\]"),
        (lambda: memory.write(np.ones((1, 8), np.int32), np.ones((1, 4), np.float32)), "dtype int32"),
        (lambda: memory.write(np.full((1, 8), np.nan, np.float32), np.ones((1, 4))), "NaN"),
        (lambda: memory.recall(np.array([[np.inf] * 8])), "NaN or infinite"),
        (lambda: memory.write(np.ones((1, 8)), np.ones((1, 4)), beta=1.5), r"beta=1.5: expected a float in \(0, 1\]"),
        (lambda: MatrixMemory(8, 4, rule="oja"), "accepted: delta, hebbian"),
        (lambda: MatrixMemory(0, 4), "d_key=0"),
        (lambda: MatrixMemory.for_domain("factz"), "accepted domains: episodes, facts, scratch"),
        (lambda: memory.grow(4), "only enlarges"),
    ]
    for call, message in cases:
        with pytest.raises(StoreError, match=message):
            call()
    assert memory.counts["writes"] == 0


def test_domains_come_from_the_config():
    config = memory_config()
    memory = MatrixMemory.for_domain("scratch", config)
    assert (memory.rule, memory.d_key, memory.d_value) == ("hebbian", 64, 64)
    with pytest.raises(AttributeError):
        config.domains.factz = {}
