"""Stand-alone associative store over one matrix (delta or Hebbian writes) and its capacity study."""

from .domains import memory_config
from memlab.errors import CorruptStoreError, StoreError
from .store import MatrixMemory

__all__ = ["CorruptStoreError", "MatrixMemory", "StoreError", "memory_config"]
