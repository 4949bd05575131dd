"""Suite-wide settings, and every measuring test in every execution mode.

A mode changes how a measurement runs, never what it measures, so the oracles, invariances and
restoration guarantees of every case must hold in each. The measuring test modules (those of
:data:`MEASURING` that call ``measure``) get it bound, per test, to one of :data:`MODES`. The
benchmarks' tests compare the modes with each other and choose them themselves; the command line's
and the zoo's tests measure through their own entry points.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sharpness import fast, measure
from sharpness.runtime import torch_threads

# name -> (mode, the fast-mode options in force)
MODES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "exact": ("exact", None),
    "fast": ("fast", {}),  # this device's defaults
    # What the fast mode does on a GPU, forced on the CPU: TF32 search, 2 m-batches per pass, 4 draws per pass.
    "fast-gpu-side": ("fast", {"precision": "tf32", "stack": 2, "draws": 4, "compile": "off"}),
    "fast-captured": ("fast", {"precision": "tf32", "stack": 2, "draws": 4, "compile": "trace"}),
}
# The folders of the measuring tests: the core, the curvature and classic cases, geodesic sharpness, the toys.
MEASURING = {Path(__file__).parent / name for name in ("core", "curvature", "geodesic", "toy")}


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """The test models are tiny: one intra-op thread is fastest and keeps 2 shared cores free."""
    with torch_threads(1):
        yield


def _in_every_mode(module: Any) -> bool:
    return getattr(module, "measure", None) is measure and Path(module.__file__).parent in MEASURING


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _in_every_mode(metafunc.module):
        metafunc.parametrize("execution_mode", list(MODES), indirect=True)


@pytest.fixture(autouse=True)
def execution_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Bind the test module's ``measure`` to the mode named by the parameter (``exact`` when unparametrized)."""
    name = getattr(request, "param", "exact")
    mode, overrides = MODES[name]
    module = getattr(request.node, "module", None)  # doctests have none
    if _in_every_mode(module):
        bound: Callable[..., Any] = functools.partial(measure, mode=mode)
        monkeypatch.setattr(module, "measure", bound)
    with fast.options(**overrides) if overrides is not None else contextlib.nullcontext():
        yield name
