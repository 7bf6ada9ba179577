"""Multi-query associative recall (MQAR), as in Zoology / Based.

Each example: N key-value pairs `k1 v1 ... kN vN` (keys from the lower half of the vocabulary, values from the
upper half, both drawn without replacement within the example), then the region after them holds each key once
more, followed by its value, at a gap drawn from a power law (short gaps more likely); every other position is the
filler token 0. The model is scored only where the next token is a queried value.
"""

from __future__ import annotations

import numpy as np

from memlab.registry import TASKS

SPLIT_STREAM = {"train": 0, "eval": 1}  # disjoint seed streams: SeedSequence((seed, stream, index))
FILLER = 0


@TASKS.register("mqar")
class MQAR:
    def __init__(self, cfg, split: str, seed: int):
        self.check(cfg)
        self.vocab, self.seq_len, self.pairs, self.power_a = cfg.vocab_size, cfg.seq_len, cfg.num_kv_pairs, cfg.power_a
        self.stream, self.seed = SPLIT_STREAM[split], seed
        slots = (self.seq_len + 1 - 2 * self.pairs) // 2
        weights = np.arange(1, slots + 1, dtype=np.float64) ** (self.power_a - 1.0)
        self.slot_probs = weights / weights.sum()

    @staticmethod
    def defaults() -> dict:
        """The task's `data.*` knobs with their defaults."""
        return {"vocab_size": 256, "seq_len": 128, "num_kv_pairs": 16,
                "power_a": 0.01}  # query gap density ~ gap^(a - 1)

    @staticmethod
    def check(cfg) -> None:
        if cfg.vocab_size < 8 or cfg.vocab_size % 2:
            raise ValueError(f"data.vocab_size must be an even number >= 8, got {cfg.vocab_size}")
        half = cfg.vocab_size // 2
        if not 1 <= cfg.num_kv_pairs <= half - 1:
            raise ValueError(f"data.num_kv_pairs must be in [1, {half - 1}] for data.vocab_size={cfg.vocab_size} "
                             f"(keys are distinct tokens of the lower half), got {cfg.num_kv_pairs}")
        need = 4 * cfg.num_kv_pairs - 1
        if cfg.seq_len < need:
            raise ValueError(f"data.seq_len={cfg.seq_len} is too short for {cfg.num_kv_pairs} kv pairs: "
                             f"need >= {need} (pairs, then each query and its answer)")
        if not cfg.power_a > 0:
            raise ValueError(f"data.power_a must be > 0 (gap density ~ gap^(a-1)), got {cfg.power_a}")

    @staticmethod
    def example_shapes(cfg) -> dict[str, tuple[int, ...]]:
        return {"inputs": (cfg.seq_len,), "targets": (cfg.seq_len,), "loss_mask": (cfg.seq_len,)}

    def __len__(self) -> int:
        return np.iinfo(np.int32).max

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.stream, int(index)))
        half, n = self.vocab // 2, self.pairs
        keys = rng.choice(np.arange(1, half), size=n, replace=False)
        values = rng.choice(np.arange(half, self.vocab), size=n, replace=False)
        seq = np.full(self.seq_len + 1, FILLER, dtype=np.int32)
        seq[0:2 * n:2], seq[1:2 * n:2] = keys, values
        slots = rng.choice(len(self.slot_probs), size=n, replace=False, p=self.slot_probs)
        order = rng.permutation(n)
        key_pos = 2 * n + 2 * slots
        seq[key_pos], seq[key_pos + 1] = keys[order], values[order]
        mask = np.zeros(self.seq_len, dtype=np.float32)
        mask[key_pos] = 1.0  # the target at a query key's position is its value
        return {"inputs": seq[:-1], "targets": seq[1:], "loss_mask": mask}
