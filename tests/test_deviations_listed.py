"""Every model family and mixer module ends its docstring with "Deviations from the anchor" (DESIGN.md's
conventions): each deviation a knob with the anchor's setting named, or a reason."""

import importlib

import pytest

MIXERS = ("attn", "conv", "hebbian", "mlstm", "deltanet", "gdn", "masked", "ttt_linear", "titans")
FAMILIES = ("lm", "encdec", "slot_memory", "memory_model", "bdh", "slow_block", "adapters")
MODULES = [*(f"memlab.models.{m}" for m in FAMILIES), *(f"memlab.models.mixers.{m}" for m in MIXERS)]


@pytest.mark.parametrize("module", MODULES)
def test_module_docstring_lists_its_deviations(module):
    doc = importlib.import_module(module).__doc__
    _, section, items = doc.partition("Deviations from the anchor:")
    assert section, f"{module}: no 'Deviations from the anchor:' section"
    assert items.strip().startswith("- "), f"{module}: the section lists nothing"
