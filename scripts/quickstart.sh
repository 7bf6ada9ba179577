#!/usr/bin/env bash
# memlab's main job on a laptop CPU: set up, then train the MQAR attention baseline into runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
.venv/bin/memlab train experiments/mqar.py --workdir runs/quickstart/mqar-attn "$@"
