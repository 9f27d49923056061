"""The Examples sections of the public functions run as written (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

import clipgeo

#: Every module behind a public name, plus the ground-floor and rule modules with examples.
MODULES = sorted({mod for mod, _ in clipgeo._LAZY.values()} | {"clipgeo.core.arrays", "clipgeo.stages.freshness"})


@pytest.mark.parametrize("module", MODULES)
def test_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # examples that write a data home write it here
    mod = importlib.import_module(module)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.failed == 0, f"{module}: {res.failed} of {res.attempted} examples failed (run python -m doctest -v)"


def test_every_public_function_has_an_example():
    missing = [name for name in clipgeo.__all__ if name != "__version__" and ">>>" not in (getattr(clipgeo, name).__doc__ or "")]
    assert not missing, f"public functions without an Examples section: {missing}"
