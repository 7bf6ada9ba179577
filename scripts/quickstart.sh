#!/usr/bin/env bash
# memlab's main job on a laptop CPU: set up, run the quickstart sweep (two families x four sizes on MQAR),
# and write runs/quickstart/report.md with fitted curves and plots. Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
.venv/bin/memlab sweep sweeps/quickstart.py --workdir runs/quickstart --parallel 2 --report "$@"
echo "report: runs/quickstart/report.md"
