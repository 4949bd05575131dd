"""The exact mode: every pass in the model's own dtype, one point at a time, on the probe as given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sharpness.average_case import Draws, average_case
from sharpness.modes import Mode
from sharpness.objective import Batch
from sharpness.space import Probe
from sharpness.worst_case import Best, Search, worst_case


class ExactExecutor:
    """:class:`~sharpness.execution.executor.Executor` of the exact mode: the searches and draws themselves."""

    def search(self, probe: Probe, batches: Sequence[Batch], spec: Search, generator: torch.Generator,
               with_error: Sequence[bool]) -> list[Best]:
        return [worst_case(probe, b, spec, generator, e) for b, e in zip(batches, with_error)]

    def sample(self, probe: Probe, batch: Batch, spec: Draws, generator: torch.Generator,
               with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return average_case(probe, batch, spec, generator, with_error)

    def exactly(self, reason: str) -> None:
        """Nothing to say: everything runs exactly."""

    def report(self) -> tuple[Mode, dict[str, Any]]:
        return "exact", {}
