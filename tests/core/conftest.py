"""Every measuring test of the core runs in every execution mode.

A mode changes how a measurement runs, never what it measures, so the core's oracles,
invariances and restoration guarantees must hold in each. Test modules that call
``measure`` get it bound, per test, to one of :data:`MODES`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sharpness import fast, measure

# name -> (mode, the fast-mode options in force)
MODES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "exact": ("exact", None),
    "fast": ("fast", {}),  # this device's defaults
    # What the fast mode does on a GPU, forced on the CPU: TF32 search, 2 m-batches per pass, 4 draws per pass.
    "fast-gpu-side": ("fast", {"precision": "tf32", "stack": 2, "draws": 4, "compile": "off"}),
    "fast-captured": ("fast", {"precision": "tf32", "stack": 2, "draws": 4, "compile": "trace"}),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if getattr(metafunc.module, "measure", None) is measure:
        metafunc.parametrize("execution_mode", list(MODES), indirect=True)


@pytest.fixture(autouse=True)
def execution_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Bind the test module's ``measure`` to the mode named by the parameter (``exact`` when unparametrized)."""
    name = getattr(request, "param", "exact")
    mode, overrides = MODES[name]
    if hasattr(request.module, "measure"):
        bound: Callable[..., Any] = functools.partial(measure, mode=mode)
        monkeypatch.setattr(request.module, "measure", bound)
    with fast.options(**overrides) if overrides is not None else contextlib.nullcontext():
        yield name
