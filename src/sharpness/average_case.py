r"""Average-case sharpness: the mean loss under random perturbations.

For one m-batch :math:`S`, :math:`\mathbb{E}_u[L_S(w + c \odot u)] - L_S(w)` with
:math:`u \sim \rho\,\mathcal N(0, I)` (``l2``) or :math:`u \sim U[-\rho, \rho]^n`
(``linf``), estimated from ``n_iters`` draws, each one forward pass. With
``antithetic=True`` the draws come in pairs :math:`(u, -u)`, which cancels the
first-order term; the Monte-Carlo error is then estimated over the pair means,
which are the independent units.

Near a minimum with Hessian :math:`H` and :math:`D = \mathrm{diag}(c)` the value is
:math:`\rho^2/2 \cdot \mathrm{tr}(DHD)` (l2) and :math:`\rho^2/6 \cdot \mathrm{tr}(DHD)`
(linf); for a quadratic loss exactly so in expectation.

>>> import torch
>>> monte_carlo_variance(torch.tensor([1.0, 3.0, 2.0, 2.0]), antithetic=True)
tensor(0.)
>>> monte_carlo_variance(torch.tensor([1.0, 3.0]), antithetic=False)
tensor(1.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from sharpness import keyed_noise
from sharpness.objective import Batch
from sharpness.space import Pool, Probe, Radius
from sharpness.spec import Norm


class Draws(Radius, Protocol):
    """What the draws read of their definition: the distribution (norm, ``rho``), how many, whether paired.

    A :class:`~sharpness.spec.Spec` of the average case is one; PAC-Bayes' noise of each trial scale another.
    """

    @property
    def n_iters(self) -> int: ...
    @property
    def antithetic(self) -> bool: ...


def draw(numel: int, norm: Norm, rho: float, like: torch.Tensor, generator: torch.Generator,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """``rho * N(0, I)`` for l2, ``U[-rho, rho]`` elementwise for linf; into ``out`` (the same numbers) if given."""
    if out is None:
        out = torch.empty(numel, device=like.device, dtype=like.dtype)
    if norm == "l2":
        return scaled(torch.randn(numel, generator=generator, out=out), norm, rho)
    return scaled(torch.rand(numel, generator=generator, out=out), norm, rho)


def scaled(unit: torch.Tensor, norm: Norm, rho: float) -> torch.Tensor:
    """Standard Gaussians (l2) or ``U[0, 1)`` numbers (linf), in place, to the distribution of radius ``rho``."""
    return unit.mul_(rho) if norm == "l2" else unit.mul_(2 * rho).sub_(rho)


# The draw streams, as ``Result.details["draw_stream"]`` records them: 1, every point one sequential draw of
# the measurement's generator; 2, embedding rows addressed by row (:class:`Addressed`), the rest sequential.
SEQUENTIAL, ADDRESSED = 1, 2


@dataclass(frozen=True)
class Addressed:
    """Draw stream 2: the pieces of a point (one per parameter) with rows of their own key.

    Each draw takes one 64-bit key from the measurement's generator; a piece with ``rows`` (the ids of
    the embedding rows it holds, in order) gets :mod:`sharpness.keyed_noise` numbers keyed by that key,
    the piece's index, the row id and the column, so a point holding only some rows of an embedding
    holds exactly the numbers the whole draw puts there; every other piece, in order, the next numbers
    of the generator.
    """

    shapes: Sequence[torch.Size]
    rows: dict[int, torch.Tensor]

    def draw(self, out: torch.Tensor, norm: Norm, rho: float, generator: torch.Generator) -> torch.Tensor:
        key = keyed_noise.to_unsigned(int(torch.randint(-(2 ** 63), 2 ** 63 - 1, (), generator=generator,
                                                        dtype=torch.int64, device=generator.device)))
        pieces = out.split([s.numel() for s in self.shapes])
        for i, piece in enumerate(pieces):
            rows = self.rows.get(i)
            if rows is None:
                draw(piece.numel(), norm, rho, piece, generator, out=piece)
                continue
            fill = piece.view(len(rows), -1) if len(rows) else piece.view(0, 1)
            keyed_noise.fill(fill, keyed_noise.key_of(key, i), rows, "normal" if norm == "l2" else "uniform")
            scaled(piece, norm, rho)
        return out


def draws(spec: Draws, like: torch.Tensor, generator: torch.Generator,
          pool: Pool | None = None, addressed: Addressed | None = None) -> Iterator[torch.Tensor]:
    """The ``n_iters`` points of one m-batch, in order; antithetic pairs reuse the previous draw, negated.

    With a ``pool`` a point is dead once the next is asked for (the consumer keeps none), so each new
    point is written into the one before it was handed back; without one every point is a new tensor.
    ``addressed`` draws each point in stream 2 (:class:`Addressed`) instead of one sequential draw.
    """
    pool = pool if pool is not None else Pool(size=0)
    u: torch.Tensor | None = None
    for j in range(spec.n_iters):
        out = pool.take(like)
        if spec.antithetic and j % 2 and u is not None:
            new = torch.neg(u, out=out)
        elif addressed is not None:
            new = addressed.draw(out, spec.norm, spec.rho, generator)
        else:
            new = draw(like.numel(), spec.norm, spec.rho, like, generator, out=out)
        if u is not None:
            pool.give(u)
        u = new
        yield u


def average_case(probe: Probe, batch: Batch, spec: Draws, generator: torch.Generator,
                 with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Losses (and errors) at ``n_iters`` random points, as device tensors."""
    space = probe.space
    losses = torch.empty(spec.n_iters, dtype=torch.float64, device=space.w0.device)
    errors = torch.empty_like(losses) if with_error else None
    for j, u in enumerate(draws(spec, space.w0, generator, space.pool, addressed_of(space))):
        losses[j], error = probe.value(u, batch, with_error)
        if errors is not None and error is not None:
            errors[j] = error
    return losses, errors


def addressed_of(space: object) -> Addressed | None:
    """The stream-2 layout of coordinates that hold embedding rows (``space.addressed``), else ``None``."""
    return getattr(space, "addressed", None)


def monte_carlo_variance(losses: torch.Tensor, antithetic: bool) -> torch.Tensor:
    """Variance of the mean of ``losses``: over pair means when antithetic. NaN for one unit."""
    units = losses.view(-1, 2).mean(dim=1) if antithetic else losses
    if units.numel() < 2:
        return torch.tensor(float("nan"), dtype=losses.dtype)
    return units.var(unbiased=True) / units.numel()
