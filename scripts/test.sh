#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite on the CPU.
# The JAX compilation cache of tests/conftest.py lives across runs here, in MEMLAB_TEST_JAX_CACHE (default
# ~/.cache/memlab/test-jax, emptied once past 2 GB): a later run compiles only what changed. A hit is the
# executable XLA built for the identical program, options, devices and jax version: no test sees other code.
# MEMLAB_TEST_JAX_CACHE=session: a fresh cache for this run only, removed at its end (a cold run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
cache="${MEMLAB_TEST_JAX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/memlab/test-jax}"
if [ "$cache" != session ]; then
  mkdir -p "$cache"
  if [ "$(du -sm "$cache" | cut -f1)" -gt 2000 ]; then find "$cache" -mindepth 1 -delete; fi
  export JAX_COMPILATION_CACHE_DIR="$cache"
fi
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
