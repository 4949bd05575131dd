"""The fast mode's options, where a user sets them: ``with sharpness.fast.options(precision="bf16"): ...``.

The mode itself is :mod:`sharpness.execution.fast`; what it may use and what it chooses per device is
:mod:`sharpness.execution.options`, how much memory a stacked search needs :mod:`sharpness.execution.memory`.
This module only names them for users.

>>> with options(stack=2) as o:
...     o.stack
2
"""

from __future__ import annotations

from sharpness.execution.memory import FLAT_VECTORS, estimate_bytes, saved_bytes, saved_bytes_of
from sharpness.execution.options import FastOptions, Plan, chunks, current_options, divisor_at_most, options, plan

__all__ = ["FLAT_VECTORS", "FastOptions", "Plan", "chunks", "current_options", "divisor_at_most", "estimate_bytes",
           "options", "plan", "saved_bytes", "saved_bytes_of"]
