"""Run by tests/test_store.py::test_kill_during_writes: saves an empty delta memory to DIR, then writes batches
forever, printing `ack I` after write I returns (so I is acknowledged), until the test SIGKILLs it."""

import sys

import numpy as np

from memlab.store import MatrixMemory

D_KEY, D_VALUE, PER_BATCH = 32, 8, 2


def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch i writes one-hot keys (2i, 2i+1) mod D_KEY with values drawn from seed i."""
    keys = np.eye(D_KEY, dtype=np.float32)[[(PER_BATCH * i + j) % D_KEY for j in range(PER_BATCH)]]
    return keys, np.random.default_rng(i).normal(size=(PER_BATCH, D_VALUE)).astype(np.float32)


def expected(last: int) -> np.ndarray:
    """What each one-hot key recalls after batches 0..last (the delta rule keeps the latest value)."""
    table = np.zeros((D_KEY, D_VALUE), np.float32)
    for i in range(last + 1):
        keys, values = batch(i)
        table[keys.argmax(1)] = values
    return table


if __name__ == "__main__":
    memory = MatrixMemory(D_KEY, D_VALUE, rule="delta", growth_threshold=None)
    memory.save(sys.argv[1])
    i = 0
    while True:
        memory.write(*batch(i))
        print(f"ack {i}", flush=True)
        i += 1
