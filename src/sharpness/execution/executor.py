"""What a case asks of an execution mode: the two primitives every sharpness case is built from.

* :meth:`Executor.search`: the best feasible point of a search (Auto-PGD, :mod:`sharpness.worst_case`) on
  each m-batch, its loss and error evaluated in the model's dtype;
* :meth:`Executor.sample`: the losses (and errors) at the draws of :mod:`sharpness.average_case` on one
  m-batch, in the model's dtype, in the order they are drawn.

A mode changes how these run, never what they compute: the exact mode (:mod:`sharpness.execution.exact`)
runs them one pass at a time; the fast mode (:mod:`sharpness.execution.fast`) in reduced precision, with
points stacked in rows, compiled. Any probe may be handed in, in any coordinates (flat, geodesic, a random
subspace, another scale vector): the mode adapts to what the coordinates allow, and records it.
:meth:`Executor.report` says what ran: the mode that :class:`~sharpness.measure.Result` reports, and
the details of the fast mode's paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from sharpness.average_case import Draws
from sharpness.modes import Mode
from sharpness.objective import Batch
from sharpness.space import Probe
from sharpness.worst_case import Best, Search


class Executor(Protocol):
    """An execution mode, for one measurement."""

    def search(self, probe: Probe, batches: Sequence[Batch], spec: Search, generator: torch.Generator,
               with_error: Sequence[bool]) -> list[Best]:
        """The best point of ``n_restarts`` searches on each m-batch, evaluated in the model's dtype."""
        ...

    def sample(self, probe: Probe, batch: Batch, spec: Draws, generator: torch.Generator,
               with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Losses (and errors) at the ``n_iters`` draws of one m-batch, as float64 device tensors."""
        ...

    def exactly(self, reason: str) -> None:
        """Say that a part of the measurement runs in the exact mode whatever was asked, and why."""
        ...

    def report(self) -> tuple[Mode, dict[str, Any]]:
        """The mode that ran and what ``Result.details`` records about it."""
        ...
