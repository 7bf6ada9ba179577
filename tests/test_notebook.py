"""The analysis notebooks run top to bottom on a sweep's output and find the laws the runs were made from.

The sweeps are synthetic (tests/fixtures/fake_sweep.py, fake_memory_sweep.py): run directories that obey the
contract of `memlab train`, with losses from known laws plus noise. Each notebook is converted with jupytext and
executed by nbclient in the venv's own python3 kernel (nothing is registered globally).
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
import fake_memory_sweep  # noqa: E402
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


def _execute(notebook: Path, probe: str, tmp_path: Path, monkeypatch):
    """Run `notebook` with `probe` appended as its last cell, in the venv's kernel with this checkout importable."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = jupytext.read(notebook)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return nb


@pytest.mark.slow
def test_scaling_laws_notebook_executes_and_recovers_the_law(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path / "sweep", d_models=(32, 64, 96, 128, 192), steps=(100, 200, 400), noise=0.002)
    monkeypatch.setenv("MEMLAB_SWEEP_DIR", str(sweep))
    monkeypatch.setenv("MEMLAB_SIZE", "params")  # the fixture's truth counts all parameters
    monkeypatch.setenv("MEMLAB_BOOTSTRAP", "20")  # intervals exercised, at a tenth of the default cost
    nb = _execute(NOTEBOOK, PROBE, tmp_path, monkeypatch)

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


MEMORY_PROBE = """
import json
print("PROBE " + json.dumps({
    "alpha": {str(w): fit.alpha for w, fit in fits.items()},
    "runs": len(runs),
    "hamming": {str(w): v for w, v in final[HAMMING].items()},
    "info": {str(w): v for w, v in final["I_e'"].items()},
}))
"""


@pytest.mark.slow
def test_memory_models_notebook_fits_each_copy_weights_frontier(tmp_path, monkeypatch):
    sweep = fake_memory_sweep.write_memory_sweep(tmp_path / "sweep")
    monkeypatch.setenv("MEMLAB_SWEEP_DIR", str(sweep))
    monkeypatch.setenv("MEMLAB_BOOTSTRAP", "0")
    nb = _execute(ROOT / "analysis" / "memory_models.py", MEMORY_PROBE, tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    probe = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
    assert probe["runs"] == 2 * len(fake_memory_sweep.TRUTH)  # the probes' own runs are not counted
    for weight, truth in fake_memory_sweep.TRUTH.items():
        assert abs(probe["alpha"][str(weight)] - truth["alpha"]) < 0.03, probe
    assert probe["hamming"]["1.0"] > probe["hamming"]["0.5"] and probe["info"]["1.0"] == 0.4
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o.get("data", {})]
    assert len(images) >= 2
