"""`MatrixMemory`: a stand-alone associative store over one d_key x d_value matrix, written by the delta rule or
the Hebbian (outer-product) rule through the `pallas_kernels` ops, with growth, snapshots and a journal.

Semantics (per pair, in order; see `rules`): delta S <- alpha S (I - beta k k^T) + beta v k^T, Hebbian
S <- alpha S + beta v k^T; recall(q) = S q. With alpha = beta = 1 and orthonormal keys both rules recall every
stored value exactly, and the delta rule replaces a key's value exactly when it is written again.

forget(k) applies S <- S (I - k k^T) with k normalised, for both rules: it subtracts the outer product of k and
the value k currently recalls, so recall(k) is exactly 0 afterwards. Under the delta rule that is writing the
zero value with beta = 1; under the Hebbian rule, with orthonormal keys, it removes exactly the pairs stored
under k, and with overlapping keys it also removes the components other keys' recalls had along k.

Growth: when `saturation()` (see `occupancy`) passes `growth_threshold` after a write, d_key is multiplied by
`growth_factor`. The old matrix becomes the top-left block of the new one and the new rows are zero, so a key
of an earlier size d is read as [k; 0] and recalls exactly what it did before. Callers use the new coordinates
for new keys (memory.d_key tells the current size); keys that stay in the old coordinates gain nothing.

Durability: `save(dir)` writes a verified snapshot and attaches the memory to `dir`; from then on every change is
journaled (fsync'd) before its call returns, and `load(dir)` replays the journal after the snapshot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memlab.errors import CorruptStoreError, StoreError

from . import journal, occupancy, rules, snapshot
from .inputs import as_rows, check_rule, check_size, check_strength
from .journal import Journal, Record


def _bucket(n: int) -> int:
    """Pad batches to powers of two (at least 8) so the jitted write compiles once per size class."""
    return max(8, 1 << (n - 1).bit_length())


def _pad(x: np.ndarray, rows: int, width: int) -> np.ndarray:
    return np.pad(x, ((0, rows - x.shape[0]), (0, width - x.shape[1])))


class MatrixMemory:
    """Associative store: write(keys, values), recall(queries), forget(keys); see the module docstring."""

    def __init__(
        self,
        d_key: int,
        d_value: int,
        *,
        rule: str = "delta",
        growth_threshold: float | None = 0.85,
        growth_factor: int = 2,
    ):
        self.rule = check_rule(rule)
        self.d_value = check_size("d_value", d_value)
        self.key_dims = [check_size("d_key", d_key)]  # every size d_key has had; keys of any of them are accepted
        # the saturation that triggers growth; None: never grow
        self.growth_threshold = (
            None if growth_threshold is None else check_strength("growth_threshold", growth_threshold)
        )
        if check_size("growth_factor", growth_factor) < 2:
            raise StoreError(f"growth_factor={growth_factor!r}: expected an integer >= 2")
        self.growth_factor = int(growth_factor)
        # S [d_key, d_value] and the key occupancy M [d_key, d_key] side by side: one kernel call writes both.
        # Kept on the host: only the writes run on the device (eager device slicing compiled a program per op).
        self._state = np.zeros((self.d_key, self.d_value + self.d_key), np.float32)
        self.counts = {"writes": 0, "forgets": 0, "growths": 0}
        self.path: Path | None = None
        self._journal: Journal | None = None

    @classmethod
    def for_domain(cls, name: str, config=None) -> MatrixMemory:
        """A memory with the sizes and rule of a named domain (see `memlab.store.domains`)."""
        from .domains import domain_settings

        return cls(**domain_settings(name, config))

    @property
    def d_key(self) -> int:
        return self.key_dims[-1]

    @property
    def matrix(self) -> np.ndarray:
        """The association matrix S in [d_key, d_value] orientation (recall is S^T q here)."""
        return self._state[:, : self.d_value].copy()

    @property
    def occupancy(self) -> np.ndarray:
        return self._state[:, self.d_value :].copy()

    def __repr__(self) -> str:
        return (
            f"MatrixMemory(rule={self.rule!r}, d_key={self.d_key}, d_value={self.d_value}, "
            f"counts={self.counts}, path={str(self.path) if self.path else None!r})"
        )

    # ------------------------------------------------------------------ operations
    def write(self, keys, values, *, alpha: float = 1.0, beta: float = 1.0) -> None:
        """Store value i under key i, pair after pair. keys [N, d_key] (or an earlier d_key), values [N, d_value]."""
        keys = as_rows("keys", keys, tuple(self.key_dims))
        values = as_rows("values", values, (self.d_value,), rows=keys.shape[0])
        record = Record("write", keys, values, check_strength("alpha", alpha), check_strength("beta", beta))
        if len(keys):
            self._commit(record)
            threshold = self.growth_threshold
            if threshold is not None and self.saturation() > threshold:
                self.grow()

    def recall(self, queries) -> np.ndarray:
        """S q for each query [N, d_key] (or an earlier d_key) -> [N, d_value] float32."""
        queries = as_rows("queries", queries, tuple(self.key_dims))
        return _pad(queries, len(queries), self.d_key) @ self._state[:, : self.d_value]

    def forget(self, keys) -> None:
        """Remove what each key recalls (see the module docstring); zero keys are no-ops."""
        keys = as_rows("keys", keys, tuple(self.key_dims))
        if len(keys):
            self._commit(Record("forget", keys))

    def grow(self, d_key: int | None = None) -> None:
        """Enlarge the key space to `d_key` (default d_key * growth_factor), keeping every recall unchanged."""
        new = self.d_key * self.growth_factor if d_key is None else check_size("d_key", d_key)
        if new <= self.d_key:
            raise StoreError(f"grow(d_key={new}): the memory already has d_key={self.d_key}; growth only enlarges")
        self._commit(Record("grow", d_key=new))

    def utilisation(self) -> float:
        """trace(M) / d_key: stored keys per key dimension (see `occupancy`)."""
        return occupancy.utilisation(self._state[:, self.d_value :])

    def saturation(self) -> float:
        """effective rank(M) / d_key in [0, 1]: the share of key space in use (see `occupancy`)."""
        return occupancy.saturation(self._state[:, self.d_value :])

    # ------------------------------------------------------------------ applying records
    def _commit(self, record: Record) -> None:
        """Journal first (durable before the call returns), then change the state."""
        if self._journal is not None:
            self._journal.append(record)
        self._apply(record)

    def _apply(self, record: Record) -> None:
        if record.op == "grow":
            self._embed(record.d_key)
            return
        n, rows, K = len(record.keys), _bucket(len(record.keys)), self.d_key
        keys = _pad(record.keys, rows, K)
        if record.op == "forget":
            norms = np.linalg.norm(keys, axis=1, keepdims=True)
            unit = keys / np.maximum(norms, 1e-30)
            self._state = np.asarray(rules.erase(self._state[None], unit[None], backend=rules.backend_for(rows))[0])
            self.counts["forgets"] += n
            return
        values = np.concatenate([_pad(record.values, rows, self.d_value), keys], axis=1)
        alpha = np.where(np.arange(rows) < n, record.alpha, 1.0).astype(np.float32)
        beta = np.full(rows, record.beta, np.float32)
        new = rules.write_states(
            self._state[None],
            keys[None],
            values[None],
            alpha[None],
            beta[None],
            rule=self.rule,
            backend=rules.backend_for(rows),
        )
        self._state = np.asarray(new[0])
        self.counts["writes"] += n

    def _embed(self, new: int) -> None:
        K, V = self.d_key, self.d_value
        state = np.zeros((new, V + new), np.float32)
        state[:K, :V], state[:K, V : V + K] = self._state[:, :V], self._state[:, V:]
        self._state = state
        self.key_dims.append(new)
        self.counts["growths"] += 1

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Snapshot to directory `path` and journal every later change there (the old journal is retired)."""
        path = Path(path)
        meta = {
            "rule": self.rule,
            "d_value": self.d_value,
            "key_dims": self.key_dims,
            "counts": self.counts,
            "growth_threshold": self.growth_threshold,
            "growth_factor": self.growth_factor,
        }
        generation = snapshot.write(path, {"state": self.matrix, "occupancy": self.occupancy}, meta)
        self._attach(path, snapshot.journal_path(path, generation))
        return path

    @classmethod
    def load(cls, path) -> MatrixMemory:
        """The memory saved at `path`: verified snapshot plus every journaled change after it; stays attached."""
        path = Path(path)
        arrays, manifest = snapshot.read(path)
        memory = cls(
            manifest["key_dims"][0],
            manifest["d_value"],
            rule=manifest["rule"],
            growth_threshold=manifest["growth_threshold"],
            growth_factor=manifest["growth_factor"],
        )
        memory.key_dims, memory.counts = list(manifest["key_dims"]), dict(manifest["counts"])
        want = {"state": (memory.d_key, memory.d_value), "occupancy": (memory.d_key, memory.d_key)}
        if any(arrays[name].shape != shape for name, shape in want.items()):
            raise CorruptStoreError(
                f"{path}: array shapes {[a.shape for a in arrays.values()]} do not match "
                f"d_key={memory.d_key}, d_value={memory.d_value} in its manifest"
            )
        memory._state = np.concatenate([arrays["state"], arrays["occupancy"]], axis=1)
        log = snapshot.journal_path(path, manifest["generation"])
        for record in journal.read(log):
            memory._apply(record)
        memory._attach(path, log)
        return memory

    def _attach(self, path: Path, log: Path) -> None:
        self.close()
        self.path, self._journal = path, Journal(log)

    def close(self) -> None:
        """Detach from the saved directory, which stays valid; later changes are in memory only until `save`."""
        if self._journal is not None:
            self._journal.close()
        self.path, self._journal = None, None
