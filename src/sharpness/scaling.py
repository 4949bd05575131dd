r"""The scale vector :math:`c(w)` and the choice of perturbed parameters.

Perturbations live in normalised coordinates :math:`u` with
:math:`\delta = c(w) \odot u`:

* ``standard``: :math:`c = 1`;
* ``elementwise``: :math:`c = |w| + \eta`;
* ``filterwise``: for a tensor with two or more dimensions, the L2 norm of each
  output filter (dim 0 for Linear / Conv / embeddings, dim 1 for ConvTranspose and
  Hugging Face ``Conv1D``), repeated over the filter, plus :math:`\eta`;
  one-dimensional tensors use :math:`|w| + \eta`.

>>> import torch
>>> w = torch.tensor([[3.0, 4.0], [0.0, -1.0]])
>>> filter_scale(w, filter_dim=0, eta=0.0)
tensor([[5., 5.],
        [1., 1.]])
>>> scale_of(w, "elementwise", eta=0.5, filter_dim=0)
tensor([[3.5000, 4.5000],
        [0.5000, 1.5000]])
"""

from __future__ import annotations

import re

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.spec import Scaling

# Modules whose weight stores output filters along dim 1.
_DIM1_MODULES = ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Conv1D")


def select_parameters(model: nn.Module, pattern: str | None,
                      trainable_only: bool = False) -> list[tuple[str, nn.Parameter]]:
    """Floating-point parameters whose name matches ``pattern`` (``re.search``), and with ``trainable_only``
    only those that require gradients (what an optimizer would train: PEFT adapters, an unfrozen head).

    Tied parameters appear once (``named_parameters`` removes duplicates), so
    they are perturbed once.
    """
    chosen = [
        (name, p)
        for name, p in model.named_parameters()
        if p.is_floating_point() and (pattern is None or re.search(pattern, name))
        and (p.requires_grad or not trainable_only)
    ]
    if not chosen:
        names = [n for n, _ in model.named_parameters()]
        shown = names[:8] + (["..."] if len(names) > 8 else [])
        which = " trainable (requires_grad)" if trainable_only else ""
        raise SharpnessError(f"params={pattern!r} selects no{which} floating-point parameter; the model has {shown}")
    return chosen


def filter_dims(model: nn.Module) -> dict[str, int]:
    """Map each parameter name to the dimension that indexes its output filters."""
    dims: dict[str, int] = {}
    for module_name, module in model.named_modules():
        dim = 1 if type(module).__name__ in _DIM1_MODULES else 0
        for param_name, _ in module.named_parameters(prefix=module_name, recurse=False):
            dims.setdefault(param_name, dim)
    return dims


def filter_scale(w: torch.Tensor, filter_dim: int, eta: float) -> torch.Tensor:
    """L2 norm of each slice ``w.select(filter_dim, i)``, broadcast to ``w``, plus ``eta``."""
    other = [d for d in range(w.dim()) if d != filter_dim]
    return torch.linalg.vector_norm(w, dim=other, keepdim=True).expand_as(w) + eta


def scale_of(w: torch.Tensor, scaling: Scaling, eta: float, filter_dim: int,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """The scale :math:`c(w)` of one parameter tensor, same shape as ``w``; into ``out`` if given."""
    w = w.detach()
    if scaling == "elementwise" or (scaling == "filterwise" and w.dim() < 2):
        c = torch.abs(w, out=out) if out is not None else w.abs()
        return c.add_(eta) if eta else c  # in place: no second parameter-sized tensor
    c = torch.ones_like(w) if scaling == "standard" else filter_scale(w, filter_dim, eta)
    return c if out is None else out.copy_(c)
