"""Suite-wide settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sharpness.runtime import torch_threads


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """The test models are tiny: one intra-op thread is fastest and keeps 2 shared cores free."""
    with torch_threads(1):
        yield
