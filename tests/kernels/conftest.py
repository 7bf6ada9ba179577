"""Fixtures for the pallas_kernels tests: random inputs and an x64 context for tight comparisons."""

from __future__ import annotations

import jax
import pytest

from tests.helpers import make_inputs


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def inputs():
    return make_inputs
