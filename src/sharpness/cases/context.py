"""What a case is given, and what it is: :class:`Context` and :class:`Case`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from sharpness.cases.summary import Clean, Summary
from sharpness.execution.executor import Executor
from sharpness.objective import Batch
from sharpness.reach import RowSpace, Unreached
from sharpness.space import Probe, WeightSpace
from sharpness.spec import Spec

T = TypeVar("T")


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
        reached: per m-batch, the embedding rows it looks up (:mod:`sharpness.reach`; parameter index ->
            rows, ``None`` for all), or ``None`` when no perturbed parameter is an embedding whose rows can be left out.
    """

    probe: Probe
    space: WeightSpace
    batches: list[Batch]
    clean: Clean
    spec: Spec
    generator: torch.Generator
    executor: Executor
    reached: list[dict[int, torch.Tensor | None]] | None = None

    @property
    def with_error(self) -> list[bool]:
        """Whether each m-batch has a 0-1 error (classifier outputs)."""
        return [e is not None for _, e in self.clean]

    @property
    def by_rows(self) -> bool:
        """Whether m-batches can be run in coordinates of only the embedding rows they read."""
        return self.reached is not None and type(self.probe.space) is WeightSpace

    def over_reach(self, run: Callable[[Probe, list[Batch], list[bool]], list[T]], restrict: bool) -> list[T]:
        """``run(probe, batches, with_error)`` over the m-batches: all at once in the measurement's coordinates,
        or, with ``restrict`` where they reach only some embedding rows, each alone in its own
        (:class:`~sharpness.reach.RowSpace`), falling back to all coordinates where that proves unsound."""
        base = self.probe.space
        if not restrict or self.reached is None or type(base) is not WeightSpace:  # e.g. a random subspace
            return run(self.probe, self.batches, self.with_error)
        out: list[T] = []
        for batch, error, rows in zip(self.batches, self.with_error, self.reached):
            space = RowSpace(base, rows)
            try:
                out += run(self.probe.derived(space), [batch], [error])
            except Unreached:
                space.reset()
                out += run(self.probe, [batch], [error])
            finally:
                space.reset()
        return out


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
