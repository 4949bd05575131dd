r"""Worst-case sharpness by Auto-PGD in normalised weight coordinates.

For one m-batch :math:`S` it searches
:math:`\max_{\|u\|_p \le \rho} L_S(w + c \odot u)` (Croce & Hein 2020, as adapted
to weights by Andriushchenko et al. 2023):

* step :math:`\eta_0 = 2\rho`; ascent direction :math:`\mathrm{sign}(g_u)` (L-infinity)
  or :math:`g_u / \|g_u\|_2` (L2), with :math:`g_u = c \odot \nabla_w L`;
* :math:`z = P(u_k + \eta\, d_k)`, then :math:`u_{k+1} = 0.75\, z + 0.25\, u_{k-1}`
  (a convex combination of feasible points, so feasible; :func:`~sharpness.space.combine`
  absorbs the rounding);
* the feasible set, the step direction and the point map belong to the coordinates
  (``probe.space.ball(spec)``): the flat L2 ball / L-infinity box of :mod:`sharpness.space`, or the
  horizontal metric ball of geodesic sharpness (:mod:`sharpness.geodesic`), searched by this same loop;
* at the checkpoints :math:`\lceil p_j n \rceil` with :math:`p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)` the step is halved and the search
  restarts from the best point when fewer than 75% of the iterations since the last
  checkpoint raised the best loss, or when neither the step nor the best loss changed.

Each iteration costs one forward and one backward at the current point; the
loss of the new iterate :math:`u_{k+1}` is therefore known one pass later, so the
checkpoint of the released code's iteration :math:`i` is taken in pass
:math:`i + 1`, right after that loss is known. Restarting from the best point
reuses the gradient stored with it, so it costs no pass. The last iterate costs a
forward only. Everything stays on the device: no host synchronisation in the loop.

The returned loss is the loss at a feasible point, so it is a lower bound on the
true maximum.

>>> schedule_checkpoints(20)
[5, 9, 12, 15, 16, 18, 19, 20]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from sharpness.objective import Batch
from sharpness.space import Pool, Probe, Radius
from sharpness.spec import Init

MOMENTUM = 0.75
MIN_UPDATE_RATIO = 0.75


class Search(Radius, Protocol):
    """What the search reads of its definition: the ball (norm, ``rho``), the iterations, restarts and start.

    A :class:`~sharpness.spec.Spec` of the worst case is one; a case that searches another ball
    (PAC-Bayes' boxes of each trial scale) passes settings of its own.
    """

    @property
    def n_iters(self) -> int: ...
    @property
    def n_restarts(self) -> int: ...
    @property
    def init(self) -> Init: ...


def schedule_checkpoints(n_iters: int) -> list[int]:
    """Iterations (0-based, the released code's numbering) at which the step is reviewed."""
    p = [0.0, 0.22]
    w = [0, math.ceil(n_iters * 0.22)]
    while w[-1] < n_iters and w[-1] != w[-2]:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        w.append(math.ceil(p[-1] * n_iters))
    return w[1:]


@dataclass
class Best:
    """The best point found so far (all tensors on the device)."""

    loss: torch.Tensor
    u: torch.Tensor
    error: torch.Tensor | None

    def merge(self, other: Best) -> Best:
        """The better of the two, row by row (ties keep ``self``)."""
        return self.take(other.loss > self.loss, other)

    def take(self, better: torch.Tensor, other: Best) -> Best:
        """``other`` where ``better`` holds, else ``self``."""
        return Best(
            loss=pick(better, other.loss, self.loss),
            u=pick(better, other.u, self.u),
            error=None if self.error is None or other.error is None else pick(better, other.error, self.error),
        )


def pick(better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where ``better`` holds, else ``old``, row by row.

    On the CPU nothing runs asynchronously, so a condition that holds for every row or for none is
    decided on the host and the chosen tensor is returned as is (the search never writes into a
    point or a gradient once made); on an accelerator that would cost a synchronisation, so the
    choice stays an elementwise select on the device.

    >>> pick(torch.tensor(True), torch.ones(2), torch.zeros(2))
    tensor([1., 1.])
    >>> pick(torch.tensor([[True], [False]]), torch.ones(2, 2), torch.zeros(2, 2))
    tensor([[1., 1.],
            [0., 0.]])
    """
    if new.device.type == "cpu":
        if bool(better.all()):
            return new
        if not bool(better.any()):
            return old
    return torch.where(better, new, old)


def apgd(probe: Probe, batch: Batch, spec: Search, init: Init, generator: torch.Generator,
         with_error: bool) -> Best:
    """One Auto-PGD search on one m-batch; returns the best feasible point.

    A probe may hold several searches stacked in rows (``u`` of shape ``(rows, numel)``, losses
    of shape ``(rows, 1)``): every update below acts row by row.
    """
    space = probe.space
    ball = space.ball(spec)
    u = probe.zeros()
    if init == "random":
        for row in u.view(-1, space.numel):
            row.copy_(ball.start(space.numel, space.w0, generator))
        u = ball.project(u.mul_(space.active))
    loss, error, g = probe.value_and_grad(u, batch, with_error)
    best = Best(loss, u, error)
    g_best = g
    u_prev = u
    step = torch.full((), 2 * spec.rho, dtype=space.w0.dtype, device=u.device)
    n_improved = torch.zeros_like(loss)
    prev_step, prev_best, prev_checkpoint = step, loss, 0
    checkpoints = set(schedule_checkpoints(spec.n_iters))
    for k in range(1, spec.n_iters + 1):
        held = (u, u_prev, best.u, g, g_best)
        z = ball.advance(u, g, step)
        u_prev, u = u, ball.combine(u_prev, z, MOMENTUM)
        if k < spec.n_iters:
            loss, error, g = probe.value_and_grad(u, batch, with_error)
        else:
            loss, error = probe.value(u, batch, with_error)
        improved = loss > best.loss
        best = best.take(improved, Best(loss, u, error))
        n_improved += improved
        i = k - 1
        if k < spec.n_iters:
            g_best = pick(improved, g, g_best)
            if i in checkpoints:
                reduce = (n_improved < MIN_UPDATE_RATIO * (i - prev_checkpoint)) | (
                    (prev_step == step) & (prev_best == best.loss)
                )
                prev_step, prev_best, prev_checkpoint = step, best.loss, i
                n_improved = torch.zeros_like(n_improved)
                step = torch.where(reduce, step / 2, step)
                u = pick(reduce, best.u, u)
                u_prev = pick(reduce, best.u, u_prev)
                g = pick(reduce, g_best, g)
        release(space.pool, held, (u, u_prev, best.u, g, g_best))
    return best


def release(pool: Pool, held: tuple[torch.Tensor, ...], kept: tuple[torch.Tensor, ...]) -> None:
    """Hand back to ``pool`` the vectors an iteration started with and no longer refers to.

    Points and gradients are never written once made, and the loop is their only owner, so a vector
    that none of its names refers to any more is dead (identity, not equality, decides).
    """
    dead = [t for i, t in enumerate(held)
            if all(t is not k for k in kept) and all(t is not h for h in held[:i])]
    pool.give(*dead)


def worst_case(probe: Probe, batch: Batch, spec: Search, generator: torch.Generator, with_error: bool) -> Best:
    """Best of ``n_restarts`` searches: the first from ``spec.init``, the others from random points."""
    best: Best | None = None
    for restart in range(spec.n_restarts):
        found = apgd(probe, batch, spec, spec.init if restart == 0 else "random", generator, with_error)
        best = found if best is None else best.merge(found)
    assert best is not None
    return best
