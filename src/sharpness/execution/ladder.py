"""The configurations a fast pass may run in, from the fastest to the plainest, and the order they are tried.

When the first pass of a configuration raises, the next simpler one is tried: compile off, then the
model itself one row at a time, then the model's own arithmetic. An exception that the plainest
configuration raises too is the model's own and propagates unchanged (:mod:`sharpness.execution.stacked`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from sharpness.execution.options import Compiled
from sharpness.execution.precision import Cast

# How a pass reaches the model: through torch.func over stacked weights, or by writing each row's point into it.
Engine = Literal["vmap", "module"]


@dataclass(frozen=True)
class Rung:
    """One configuration of the pass, from the fastest to the plainest."""

    engine: Engine
    cast: Cast
    compile: Compiled

    def describe(self, rows: int, shared: bool) -> str:
        unit = ("draw", "draws") if shared else ("m-batch", "m-batches")
        precision = {"none": "the model's dtype", "tf32": "TF32 products", "bf16": "bf16 products"}[self.cast]
        execution = {"off": "eager", "on": "compiled", "graphs": "compiled with CUDA graphs",
                     "cudagraphs": "CUDA graphs", "trace": "captured, run eagerly"}[self.compile]
        return f"{precision}, {rows} {unit[rows > 1]} per pass ({self.engine}, {execution})"


def ladder(precision: str, compiled: str, rows: int) -> list[Rung]:
    """The requested configuration first, then each simpler fallback once.

    One row, uncompiled, goes straight to the model itself (``functional_call`` would only add overhead).

    >>> [(r.engine, r.cast, r.compile) for r in ladder("bf16", "on", 4)]
    [('vmap', 'bf16', 'on'), ('vmap', 'bf16', 'off'), ('module', 'bf16', 'off'), ('module', 'none', 'off')]
    >>> [(r.engine, r.cast, r.compile) for r in ladder("fp32", "off", 1)]
    [('module', 'none', 'off')]
    """
    low = cast(Cast, "none" if precision == "fp32" else precision)
    mode = cast(Compiled, compiled)
    rungs = [Rung("vmap", low, mode), Rung("vmap", low, "off"), Rung("module", low, "off"),
             Rung("module", "none", "off")]
    if rows == 1 and mode == "off":
        rungs = rungs[2:]
    return list(dict.fromkeys(rungs))

