"""What a case is given, and what it is: :class:`Context` and :class:`Case`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sharpness.cases.summary import Clean, Summary
from sharpness.execution.executor import Executor
from sharpness.objective import Batch
from sharpness.space import Probe, WeightSpace
from sharpness.spec import Spec


@dataclass(frozen=True)
class Context:
    """One measurement, as a case sees it.

    Attributes:
        probe: loss and error at points of ``space``, counting the passes.
        space: the measurement's coordinates (flat normalised weights, or the geodesic chart).
        batches: the m-batches, on the model's device.
        clean: the unperturbed loss and error of each m-batch.
        spec: the definition.
        generator: every draw of the measurement, seeded by ``spec.seed``.
        executor: the mode: the searches and draws a case runs go through it.
    """

    probe: Probe
    space: WeightSpace
    batches: list[Batch]
    clean: Clean
    spec: Spec
    generator: torch.Generator
    executor: Executor

    @property
    def with_error(self) -> list[bool]:
        """Whether each m-batch has a 0-1 error (classifier outputs)."""
        return [e is not None for _, e in self.clean]


@dataclass(frozen=True)
class Case:
    """A sharpness case: its name in ``Spec.case``, how it runs, and what it costs.

    Attributes:
        run: the :class:`Summary` of a measurement.
        runs_exactly: why the case runs in the exact mode whatever the mode asked (``None``: it runs in
            every mode, through the executor's searches and draws).
        passes_per_batch: the model's forward passes per m-batch, where known in advance (a progress bar).
    """

    name: str
    run: Callable[[Context], Summary]
    runs_exactly: str | None = None
    passes_per_batch: Callable[[Spec], int] | None = None
