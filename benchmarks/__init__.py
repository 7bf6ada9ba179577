"""Command-line benchmarks, run from the repository root as ``python -m benchmarks.<name>``; their figures are
recorded in BENCHMARKS.md. ``kernels``: the pallas_kernels ops (delta rule, mLSTM) per backend."""
