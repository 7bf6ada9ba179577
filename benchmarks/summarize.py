"""The kernel benchmark's JSON files as one table each: ``python -m benchmarks.summarize FILE.json ...``.

scripts/gpu_check.sh prints this at the end of a GPU run, so the figures (times, TFLOP/s, % of peak, the fla
ratio) can be read from its summary without opening the JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.kernels import HEADER, format_row


def summarize(path: Path) -> str:
    """The file's setting (op, device, peak, fla) and its rows, as the benchmark printed them."""
    data = json.loads(path.read_text())
    meta = data["meta"]
    lines = [
        f"## {path.name}: {meta['op']} on {meta['device']} (peak: {meta.get('accelerator') or 'unknown'}); "
        f"jax {meta['jax']}; chunk {meta['chunk_size']}; fla: {meta.get('fla', 'not asked')}",
        HEADER,
        *(format_row(r) for r in data["results"]),
    ]
    if "fla_ratio_fwd_bwd" in meta:
        lines.append(f"fla/pallas time: fwd {meta['fla_ratio_fwd']:.2f}x, fwd+bwd {meta['fla_ratio_fwd_bwd']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(summarize(Path(p)) for p in sys.argv[1:]))
