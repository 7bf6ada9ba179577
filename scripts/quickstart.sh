#!/usr/bin/env bash
# memlab's main job on a laptop CPU: set up, prepare the built-in corpus once (data/stdlib, reused after),
# run the quickstart sweep (attention and Gated DeltaNet language models at five sizes, token budgets growing
# with size), and write runs/quickstart/report.md with fitted laws and plots. Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
.venv/bin/memlab data prepare --source stdlib --out data/stdlib --no-progress >/dev/null  # a no-op once prepared
.venv/bin/memlab sweep sweeps/quickstart.py --workdir runs/quickstart --parallel 2 --report "$@"
echo "report: runs/quickstart/report.md"
