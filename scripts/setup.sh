#!/usr/bin/env bash
# Create .venv (if missing) and install memlab with its test extras into it, at the exact versions of
# constraints.txt (MEMLAB_UNLOCKED=1: the newest versions pyproject.toml's ranges allow). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
lock=(-c constraints.txt)
[ "${MEMLAB_UNLOCKED:-0}" = 1 ] && lock=()
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${lock[@]}" -e ".[dev]"
