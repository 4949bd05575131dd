"""Execution modes: how a measurement runs, never what it measures.

=========  ============================================================================
``exact``  :mod:`~sharpness.execution.exact`: the model's dtype, one pass at a time
``fast``   :mod:`~sharpness.execution.fast`: reduced-precision searches re-evaluated in the model's
           dtype, m-batches and draws stacked in rows, compiled passes
=========  ============================================================================

A case asks its mode for the two primitives of :class:`~sharpness.execution.executor.Executor`
(searches and draws) and so runs in every mode; the fast mode's parts are modules of their own:
:mod:`~sharpness.execution.options` (what it may use, per device), :mod:`~sharpness.execution.precision`,
:mod:`~sharpness.execution.functional` (passes over stacked weights), :mod:`~sharpness.execution.ladder`
(the fallbacks), :mod:`~sharpness.execution.stacked` (probes of stacked points) and
:mod:`~sharpness.execution.memory` (how many rows fit).

>>> type(executor_for("fast")).__name__
'FastExecutor'
"""

from __future__ import annotations

from sharpness.errors import SharpnessError
from sharpness.execution.exact import ExactExecutor
from sharpness.execution.executor import Executor
from sharpness.execution.fast import FastExecutor
from sharpness.modes import MODES, Mode


def executor_for(mode: str) -> Executor:
    """A fresh executor of ``mode`` for one measurement (the fast mode takes the options in force)."""
    if mode == "exact":
        return ExactExecutor()
    if mode == "fast":
        return FastExecutor()
    raise SharpnessError(f"mode must be one of {list(MODES)}, got {mode!r}")


__all__ = ["MODES", "ExactExecutor", "Executor", "FastExecutor", "Mode", "executor_for"]
