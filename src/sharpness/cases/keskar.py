r"""Keskar et al. (2017) epsilon-sharpness, with the Auto-PGD search of the worst case.

For one m-batch :math:`S`,

.. math:: \phi_S = 100 \cdot \frac{\max_{\delta \in C} L_S(w + \delta) - L_S(w)}{1 + L_S(w)},

reported as the mean over m-batches. In the full space :math:`C` is the ball of the ``worst`` case,
:math:`\delta = c \odot u`, :math:`\|u\|_p \le \rho`; Keskar's box
:math:`|\delta_i| \le \epsilon (|w_i| + 1)` is ``linf`` with ``scaling="elementwise"``, ``eta=1`` and
``rho=eps``.

The search goes through the mode's executor like the worst case's: in the fast mode it runs in reduced
precision with stacked m-batches, in the full space on the functional engine, in a subspace on the module
engine (the subspace's points are written into the model), and each best point is re-evaluated in the
model's dtype.

With ``subspace=p`` the search runs in a random p-dimensional subspace, as Keskar et al. also do:
:math:`\delta = A (s \odot y)`, :math:`\|y\|_p \le \rho`, where :math:`A` has orthonormal columns (the QR
factor of a Gaussian matrix drawn from ``seed``, so :math:`A^+ = A^\top`) and :math:`s = |A^\top w| + \eta`
(elementwise) or 1 (standard): Keskar's box :math:`|y_j| \le \epsilon (|(A^+ w)_j| + 1)` for ``eta=1``.

>>> import torch
>>> a = subspace_basis(6, 2, seed=0, like=torch.zeros(1, dtype=torch.float64))
>>> torch.allclose(a.T @ a, torch.eye(2, dtype=torch.float64))
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch
from torch import nn

from sharpness.cases import worst
from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Summary, batch_stderr
from sharpness.errors import SharpnessError
from sharpness.space import Ball, FlatBall, Pool, Radius, WeightSpace
from sharpness.spec import Spec


def subspace_basis(numel: int, dim: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """``numel x dim`` matrix with orthonormal columns, from a Gaussian matrix drawn with ``seed``."""
    generator = torch.Generator(device=like.device).manual_seed(seed)
    gauss = torch.randn(numel, dim, generator=generator, device=like.device, dtype=like.dtype)
    return torch.linalg.qr(gauss).Q


class Subspace:
    """Coordinates :math:`y` of a random subspace: :math:`w = w_0 + A (s \\odot y)`.

    They are :class:`~sharpness.space.Coordinates` of their own: ``w0`` is the origin of the ``y``
    coordinates and ``c`` the scale ``s``; points are written through an unscaled copy of the full space
    (``delta`` itself), so weights whose full-space scale is 0 raise no division.
    """

    flat = False  # a point is A (s * y), not w0 + c * y
    runs_exactly: str | None = None

    def __init__(self, full: WeightSpace, dim: int, spec: Spec) -> None:
        if dim > full.numel:
            raise SharpnessError(f"subspace={dim} exceeds the {full.numel} perturbed weights")
        self.full = WeightSpace(cast("list[nn.Parameter]", full.params), [""] * len(full.params), "standard", 0.0, {})
        self.params = full.params
        self.basis = subspace_basis(full.numel, dim, spec.seed, full.w0)
        coords = self.basis.T @ full.w0
        self.c = torch.ones_like(coords) if spec.scaling == "standard" else coords.abs() + spec.eta
        self.w0 = torch.zeros_like(coords)
        self.active = self.c > 0
        self.pool = Pool()

    @property
    def numel(self) -> int:
        return self.w0.numel()

    @torch.no_grad()
    def set(self, u: torch.Tensor) -> None:
        self.full.set(self.basis @ (self.c * u))

    def reset(self) -> None:
        self.full.reset()

    def grad_u(self, loss: torch.Tensor) -> torch.Tensor:
        return (self.basis.T @ self.full.grad_u(loss)).mul_(self.c)

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.w0)

    def ball(self, spec: Radius) -> Ball:
        return FlatBall(spec.norm, spec.rho, self.w0.dtype, self.pool)

    def details(self) -> dict[str, Any]:
        return {}


def run(ctx: Context) -> Summary:
    """Auto-PGD maximum of each m-batch, normalised as Keskar et al. do."""
    spec = ctx.spec
    if spec.subspace:
        ctx = dataclasses.replace(ctx, probe=ctx.probe.derived(Subspace(ctx.space, spec.subspace, spec)))
    found = worst.run(ctx)
    per_batch = [100 * rise / (1 + loss) for rise, (loss, _) in zip(found.per_batch, ctx.clean)]
    details = {"subspace": spec.subspace} if spec.subspace else {}
    return Summary(per_batch, found.error_increase, batch_stderr(per_batch, summation="rational"), found.radius,
                   details)


CASE = Case("keskar", run)
