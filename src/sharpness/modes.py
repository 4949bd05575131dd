"""The names of the execution modes: how a measurement runs, never what it measures.

Kept apart from :mod:`sharpness.execution` (which needs torch) so that the command line and the
study config can check a mode's name without importing torch.

>>> MODES
('exact', 'fast')
"""

from __future__ import annotations

from typing import Literal, get_args

# How a measurement executes; the definition (the Spec) is the same in every mode.
Mode = Literal["exact", "fast"]
MODES: tuple[Mode, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "exact"
