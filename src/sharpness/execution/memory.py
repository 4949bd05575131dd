"""How much device memory a stacked search needs, to choose how many m-batches one pass may hold.

Autograd's saved tensors are measured on one and two examples: the difference is the cost of an
example, the rest (weight copies) is paid once per row; the search's own flat vectors add
``FLAT_VECTORS`` copies of the parameters per row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sharpness.execution.options import Plan, divisor_at_most
from sharpness.execution.precision import arithmetic
from sharpness.objective import Batch
from sharpness.space import Probe

# Bytes of flat vectors kept per row by the search: u, u_prev, z, best u, g, g_best, the
# weights, their gradient and temporaries of the update (counted generously).
FLAT_VECTORS = 12


def saved_bytes(fn: Callable[[], Any], precision: str) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``fn()`` (activations, weight copies)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            arithmetic("bf16" if precision == "bf16" else "none", torch.device("cpu")):
        fn()
    return sum(seen.values())


def saved_bytes_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> int:
    """:func:`saved_bytes` of the cross-entropy of ``model`` on ``(x, y)``."""
    return saved_bytes(lambda: F.cross_entropy(model(x), y), precision)


def row_bytes(probe: Probe, batch: Batch, precision: str) -> float:
    """Estimated device bytes of one row of a stacked pass on ``batch``: activations scale with its size.

    Saved bytes are measured on one and two examples: the difference is the cost of an example,
    the rest (weight copies) is paid once per row; the search's flat vectors add
    ``FLAT_VECTORS`` copies of the parameters.
    """
    probe.space.set(probe.space.zeros())
    one, two = (saved_bytes(functools.partial(probe.objective, _head(batch, n), False), precision) for n in (1, 2))
    per_example = max(two - one, 0)
    fixed = one - per_example
    return estimate_bytes(probe.space.numel, per_example, fixed, len(batch), 1) - 4 * probe.space.numel


def _head(batch: Batch, n: int) -> Batch:
    return Batch(tuple(a[:n] for a in batch.args), {k: v[:n] for k, v in batch.kwargs.items()}, batch.target[:n])


def memory_stack(probe: Probe, batches: list[Batch], p: Plan, grad: bool) -> int:
    """How many m-batches fit in one pass within ``memory_fraction`` of the free device memory."""
    device = probe.space.w0.device
    if device.type != "cuda" or not grad:
        return len(batches)
    free, _ = torch.cuda.mem_get_info(device)
    per_row = row_bytes(probe, batches[0], p.precision)
    fit = max(1, int(p.memory_fraction * free // per_row))
    return divisor_at_most(len(batches), fit)


def estimate_bytes(n_params: int, activation_bytes_per_example: float, weight_copy_bytes: float, m: int,
                   rows: int) -> float:
    """Device bytes of a stacked fast-mode search: ``rows`` m-batches of ``m`` examples at once.

    The model itself (``4 n_params``), then per row the flat vectors of the search
    (``FLAT_VECTORS * 4 n_params``), the weight copies the pass saves and ``m`` examples' activations.

    >>> round(estimate_bytes(86_000_000, 10e6, 2 * 86e6, m=256, rows=1) / 1e9, 3)  # 0.344 + 4.128 + 0.172 + 2.56
    7.204
    """
    per_row = FLAT_VECTORS * 4 * n_params + weight_copy_bytes + m * activation_bytes_per_example
    return 4 * n_params + rows * per_row
