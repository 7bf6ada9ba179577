"""The analysis notebook runs top to bottom on a sweep's output and finds the law the runs were made from.

The sweep is synthetic (tests/fixtures/fake_sweep.py): run directories that obey the contract of `memlab
train`, with losses from a known Chinchilla law plus noise. The notebook is converted with jupytext and executed
by nbclient in the venv's own python3 kernel (nothing is registered globally).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_sweep import TRUTH, write_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "analysis" / "scaling_laws.py"

# Appended to the notebook: reads back what it fitted, for comparison with the generating law.
PROBE = """
import json
print("PROBE " + json.dumps({
    "metric": METRIC, "axes": axes,
    "alpha_N": {f: fit.alpha for f, fit in params_fits.items()},
    "frontier": sorted(law.family for law in frontier_laws),
    "chinchilla": {f: {"alpha": fit.alpha, "beta": fit.beta} for f, fit in chinchilla_fits.items()},
    "diagnostics": [[r.family, r.law, bool(r.identified)] for r in diagnostics_table(laws).itertuples()],
}))
"""


def _outputs(nb, kind: str) -> list:
    return [
        o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o["output_type"] == kind
    ]


@pytest.mark.slow
def test_scaling_laws_notebook_executes_and_recovers_the_law(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path / "sweep", d_models=(32, 64, 96, 128, 192), steps=(100, 200, 400), noise=0.002)
    monkeypatch.setenv("MEMLAB_SWEEP_DIR", str(sweep))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MEMLAB_SIZE", "params")  # the fixture's truth counts all parameters
    monkeypatch.setenv("MEMLAB_BOOTSTRAP", "20")  # intervals exercised, at a tenth of the default cost
    nb = jupytext.read(NOTEBOOK)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    probe = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
    assert probe["metric"] == "eval/accuracy"
    assert probe["axes"] == ["model.mixers", "model.d_model", "train.steps"]
    assert probe["frontier"] == ["lm:attn", "lm:gdn"]
    tables = [o["data"].get("text/plain", "") for o in _outputs(nb, "execute_result")]
    assert any("residual RMS (log)" in t and "why not" in t for t in tables)
    identified = {(family, law): ok for family, law, ok in probe["diagnostics"]}
    for family in ("lm:attn", "lm:gdn"):  # the notebook shows the report's diagnostics table, one row per law
        assert {kind for f, kind in identified if f == family} == {"compute", "params", "chinchilla", "isoflop"}
        assert identified[(family, "params")], probe["diagnostics"]  # 5 sizes, each size's best run
        assert not identified[(family, "isoflop")]  # one budget per size: skipped
    for family, mixer in (("lm:attn", "attn"), ("lm:gdn", "gdn")):
        truth = TRUTH[mixer]
        # Each size's best run has the largest D (400 steps): L(N) = const + A/N^alpha.
        assert abs(probe["alpha_N"][family] - truth["alpha"]) < 0.1, probe
        assert abs(probe["chinchilla"][family]["alpha"] - truth["alpha"]) < 0.05, probe
        assert abs(probe["chinchilla"][family]["beta"] - truth["beta"]) < 0.1, probe
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # loss+accuracy vs compute, loss vs params, metric vs d_model and vs steps
