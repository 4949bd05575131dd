"""Model inputs as the zoo hands them to a model: a tensor, or the dict of token tensors a text model's
``forward`` takes, in row-major layout on the model's device; and the training labels with label noise.

Every path that moves inputs to a device (training, evaluation, a study's units, ``sharpness measure``)
does it with :func:`to_device`.
"""

from __future__ import annotations

from typing import Any

import torch

Inputs = torch.Tensor | dict[str, torch.Tensor]


def row_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major strides (a copy only when needed).

    A tensor whose size-1 dimensions carry other strides (numpy's ``a[:, None]``) passes
    ``is_contiguous()`` yet also counts as channels-last, which routes convolutions to other
    kernels; with torch 2.13 on the CPU their backward corrupted memory on such batches.

    >>> row_major(torch.zeros(2, 3, 3)[:, None]).stride()
    (9, 9, 3, 1)
    """
    expected, size = [], 1
    for n in reversed(x.shape):
        expected.append(size)
        size *= max(n, 1)
    if x.stride() == tuple(reversed(expected)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def to_device(x: Inputs, device: Any, dtype: torch.dtype | None = None) -> Inputs:
    """Inputs (a tensor or a dict of tensors) on ``device``, in the layout they have; with ``dtype``,
    floating tensors are cast to it (token ids and masks keep theirs).

    >>> to_device({"ids": torch.tensor([1, 2]), "x": torch.zeros(2)}, "cpu", torch.float64)["ids"].dtype
    torch.int64
    """
    if isinstance(x, dict):
        return {k: _to(v, device, dtype) for k, v in x.items()}
    return _to(x, device, dtype)


def _to(x: torch.Tensor, device: Any, dtype: torch.dtype | None) -> torch.Tensor:
    return x.to(device, dtype=dtype) if dtype is not None and x.is_floating_point() else x.to(device)


def inputs_on(x: Inputs, device: Any) -> Inputs:
    """:func:`to_device`, then :func:`row_major`: the inputs training and evaluation feed a model.

    (A study's units and ``sharpness measure`` move their inputs with :func:`to_device` alone: the zoo's
    inputs are row-major already, and a caller's own tensors are measured in the layout they come in.)
    """
    moved = to_device(x, device)
    return {k: row_major(v) for k, v in moved.items()} if isinstance(moved, dict) else row_major(moved)


def noisy_labels(y: torch.Tensor, fraction: float, n_classes: int, seed: int) -> torch.Tensor:
    """Replace ``round(fraction * N)`` labels, chosen for ``seed``, by a different random class.

    >>> y = torch.zeros(10, dtype=torch.long)
    >>> int((noisy_labels(y, 0.3, 4, seed=0) != y).sum())
    3
    """
    if fraction <= 0:
        return y
    g = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    chosen = torch.randperm(n, generator=g)[: round(fraction * n)]
    shift = torch.randint(1, n_classes, (chosen.numel(),), generator=g)
    out = y.clone()
    out[chosen] = (y[chosen] + shift) % n_classes
    return out
