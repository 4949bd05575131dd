"""The data of a measurement as m-batches on the model's device, checked before any search.

``data`` is an iterable of batches, each one m-batch used as given; or a pair of tensors ``(X, Y)``
(``X`` may be a mapping of keyword tensors) from which a random subset of ``spec.n_examples``, seeded by
``spec.seed``, is split into m-batches of ``spec.m``. The selected parameters must share one device and
one dtype and be finite; so must the batches' floating-point tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.objective import Batch, as_batch
from sharpness.spec import Spec


def single_device(named: list[tuple[str, nn.Parameter]]) -> torch.device:
    """The one device of the selected parameters (which must also share one dtype)."""
    devices = {p.device for _, p in named}
    dtypes = {p.dtype for _, p in named}
    if len(devices) > 1:
        raise SharpnessError(f"the selected parameters live on several devices: {sorted(map(str, devices))}")
    if len(dtypes) > 1:
        raise SharpnessError(
            f"the selected parameters have several dtypes {sorted(map(str, dtypes))}; cast the model or narrow params="
        )
    return devices.pop()


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is finite.

    A NaN or infinity anywhere makes the sum non-finite, so a finite sum settles it in one reduction (no
    mask of ``t``'s size); a non-finite sum may also be an overflow of finite values, so the elements decide.

    >>> all_finite(torch.tensor([3e38, 3e38])), all_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    """
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_finite(params: list[nn.Parameter], names: list[str]) -> None:
    for name, p in zip(names, params):
        if not all_finite(p.detach()):
            raise SharpnessError(f"parameter {name!r} holds non-finite values (NaN or inf)")


def _is_pair(data: Any) -> bool:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    return isinstance(y, torch.Tensor) and (
        isinstance(x, torch.Tensor) or (isinstance(x, Mapping) and all(isinstance(v, torch.Tensor) for v in x.values()))
    )


def prepare_batches(data: Any, spec: Spec, device: torch.device) -> list[Batch]:
    raw = _subset_batches(data, spec) if _is_pair(data) else _listed(data)
    if not raw:
        raise SharpnessError("data holds no batch")
    batches = [as_batch(b, i) for i, b in enumerate(raw)]
    for i, batch in enumerate(batches):
        for t in batch.tensors():
            if t.device != device:
                raise SharpnessError(f"batch {i} has a tensor on {t.device}, but the model is on {device}")
            if t.is_floating_point() and not all_finite(t):
                raise SharpnessError(f"batch {i} holds non-finite values (NaN or inf) in a tensor of shape "
                                     f"{tuple(t.shape)}: clean the data first")
    return batches


def _listed(data: Any) -> list[Any]:
    if isinstance(data, (torch.Tensor, str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise SharpnessError(
            f"data must be an (X, Y) pair of tensors or an iterable of batches, got {type(data).__name__}"
        )
    return list(data)


def _subset_batches(data: Any, spec: Spec) -> list[Any]:
    x, y = data
    n = int(y.shape[0]) if y.dim() else 0
    sizes = {int(v.shape[0]) for v in (x.values() if isinstance(x, Mapping) else [x])}
    if sizes != {n}:
        raise SharpnessError(f"X and Y must have the same number of examples, got {sorted(sizes)} and {n}")
    if spec.m > n:
        raise SharpnessError(f"m={spec.m} is larger than the {n} examples in data")
    if spec.n_examples > n:
        raise SharpnessError(
            f"n_examples={spec.n_examples} is larger than the {n} examples in data; set n_examples to a multiple "
            f"of m={spec.m} that is at most {n}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed))[: spec.n_examples]
    batches = []
    for chunk in order.split(spec.m):
        idx = chunk.to(y.device)
        xs = {k: v[idx.to(v.device)] for k, v in x.items()} if isinstance(x, Mapping) else x[idx.to(x.device)]
        batches.append((xs, y[idx]))
    return batches


