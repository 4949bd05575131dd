"""The functional engine of the fast mode: passes over points stacked in rows that never write the model.

Weights reach the model through ``torch.func.functional_call``; rows are mapped with ``vmap`` (batched
matmuls for linear layers, grouped convolutions for convolutions). A pass holds only what shapes the
computation, so a compiled copy (``torch.compile``, optionally with CUDA graphs) is kept and reused by
later measurements of the same model.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from sharpness.execution.options import Compiled
from sharpness.execution.precision import Cast
from sharpness.objective import Batch, Objective, logits_of

# A pass returns losses (rows, 1), errors (rows, 1) and, with gradient, g_u (rows, numel).
PassOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True, eq=False)
class FunctionalStep:
    """The functional engine: loss, error and :math:`g_u` of points stacked in rows, never writing the model.

    Weights reach the model through ``torch.func.functional_call``; rows are mapped with
    ``vmap``. It holds only what shapes the computation, so a compiled copy can be reused by
    later measurements of the same model.
    """

    model: nn.Module
    objective: Objective
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dtype: torch.dtype
    cast: Cast
    rows: int
    shared: bool
    grad: bool
    with_error: bool

    def row(self, w: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any],
            target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = (t.view(s) for t, s in zip(w.split(self.numels), self.shapes))
        weights = dict(zip(self.names, views))

        def call(*a: Any, **k: Any) -> torch.Tensor:
            # Logits back in the model's dtype: the loss is never taken in bfloat16.
            return logits_of(functional_call(self.model, weights, a, k)).to(self.dtype)

        functional = dataclasses.replace(self.objective, model=cast(nn.Module, call))
        loss, error = functional(Batch(args, kwargs, target), self.with_error)
        return loss.to(self.dtype), (error if error is not None else loss.new_zeros(())).to(self.dtype)

    def __call__(self, u: torch.Tensor, w0: torch.Tensor, c: torch.Tensor, args: tuple[Any, ...],
                 kwargs: dict[str, Any], target: torch.Tensor) -> PassOut:
        w = torch.addcmul(w0, c, u)
        fn: Callable[..., Any] = grad_and_value(self.row, has_aux=True) if self.grad else self.row
        if self.rows == 1:
            out = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), fn(w[0], args, kwargs, target))
        else:
            dims = None if self.shared else 0
            out = vmap(fn, in_dims=(0, dims, dims, dims))(w, args, kwargs, target)
        if self.grad:
            g, (loss, error) = out
            return loss.view(-1, 1), error.view(-1, 1), g * c
        loss, error = out
        return loss.view(-1, 1), error.view(-1, 1), None


# Compiled passes are kept (a few, most recent first) so that repeated measurements of a model
# with the same configuration do not compile again.
_COMPILED: OrderedDict[tuple[Any, ...], Callable[..., Any]] = OrderedDict()
_KEEP_COMPILED = 8


def compiled(step: FunctionalStep, mode: Compiled) -> Callable[..., Any]:
    objective = step.objective
    key = (id(step.model), step.names, step.dtype, step.cast, step.rows, step.shared, step.grad, step.with_error,
           objective.loss_fn, objective.logit_norm, mode)
    if key not in _COMPILED:
        backend = {"trace": "eager", "cudagraphs": "cudagraphs"}.get(mode, "inductor")
        _COMPILED[key] = torch.compile(step, dynamic=False, backend=backend,
                                       mode="reduce-overhead" if mode == "graphs" else None)
        while len(_COMPILED) > _KEEP_COMPILED:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return _COMPILED[key]
