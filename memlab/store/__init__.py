"""The stand-alone associative store: one d_key x d_value matrix written by the delta or Hebbian rule (through
the pallas_kernels ops), with verified snapshots, a write-ahead journal and a capacity study
(`memlab store-capacity`). Named `store` so that "memory model" stays free for the encoder-decoder family."""

from memlab.errors import CorruptStoreError, StoreError

from .domains import memory_config
from .matrix_memory import MatrixMemory

__all__ = ["CorruptStoreError", "MatrixMemory", "StoreError", "memory_config"]
