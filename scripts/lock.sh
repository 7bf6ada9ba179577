#!/usr/bin/env bash
# Refresh constraints.txt, the exact versions `scripts/setup.sh` installs: resolve memlab[dev] from pyproject's
# ranges in a throwaway venv and freeze it. Run it with the oldest supported Python (3.11), then check that the
# lock installs on the others (PYTHON=python3.12 bash scripts/setup.sh in a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet ".[dev]"
{
  echo "# Exact versions installed by scripts/setup.sh (pip -c). Made by scripts/lock.sh with"
  echo "# $("$tmp/venv/bin/python" --version) on $(date -u +%Y-%m-%d); pyproject.toml keeps the ranges."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^memlab[= @]' | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
