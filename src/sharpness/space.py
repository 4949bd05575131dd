r"""Normalised weight space: :math:`w = w_0 + c \odot u` as one flat vector.

All perturbed parameters are concatenated into flat vectors (``w0``, ``c``, ``u``,
the gradient) so that each update of the search is a single kernel, whatever the
number of parameter tensors. Writing a point into the model is one ``addcmul``
and one multi-tensor copy; reading the gradient is one ``cat`` and one multiply:
:math:`g_u = c \odot \nabla_w L`.

The feasible sets are the L2 ball and the L-infinity box of radius
:math:`\rho` in :math:`u`: the projections are one rescale and one clamp.
The radius used is rounded *down* to the working precision so that every
stored point is feasible in exact arithmetic too:

>>> import torch
>>> r = inner_radius(0.002, torch.float32, "linf")
>>> r <= 0.002
True
>>> u = project(torch.tensor([3.0, 4.0], dtype=torch.float64), "l2", inner_radius(1.0, torch.float64, "l2"))
>>> float(torch.linalg.vector_norm(u)) <= 1.0
True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from sharpness.objective import Batch, Objective
from sharpness.scaling import scale_of
from sharpness.spec import Norm, Scaling


def inner_radius(rho: float, dtype: torch.dtype, norm: Norm) -> float:
    """Largest radius in ``dtype`` whose projections never leave the ``rho`` ball.

    For L-infinity the clamp bound is rounded down to ``dtype``. For L2 the target
    norm is shrunk by ``16 eps``: that absorbs the rounding of the rescale (about
    ``eps``) and of a convex combination of two projected points (at most ``6 eps``),
    so such a combination needs no second projection.
    """
    eps = torch.finfo(dtype).eps
    target = rho * (1 - 16 * eps) if norm == "l2" else rho
    r = torch.tensor(target, dtype=dtype)
    while float(r) > target:
        r = torch.nextafter(r, torch.zeros_like(r))
    return float(r)


def norm_of(u: torch.Tensor, norm: Norm) -> torch.Tensor:
    """:math:`\\|u\\|_2` accumulated in float64, or :math:`\\|u\\|_\\infty` (exact in any precision), as float64.

    >>> norm_of(torch.tensor([1.0, -3.0, 2.0]), "linf")
    tensor(3., dtype=torch.float64)
    """
    if norm == "linf":
        if u.numel() == 0:
            return torch.zeros((), dtype=torch.float64, device=u.device)
        low, high = torch.aminmax(u)  # one pass, no |u| copy
        return torch.maximum(-low, high).to(torch.float64)
    return row_norms(u.reshape(-1)).reshape(())


# Elements per piece of a CPU float64 norm: its float64 copy (512 KiB) stays in cache.
NORM_CHUNK = 1 << 16


def row_norms(u: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row of ``u`` (a point, or points stacked in rows), in float64, keeping the last dim.

    On a CPU, a float64 norm of a float32 vector first copies the whole vector to float64, which costs
    several times the arithmetic; the norm is therefore taken in cache-sized pieces, each accumulated in
    float64, and the pieces' squares summed in float64: the same float64 accumulation, up to its rounding.

    >>> u = torch.arange(3 * NORM_CHUNK, dtype=torch.float32).reshape(1, -1) / NORM_CHUNK
    >>> bool(torch.isclose(row_norms(u), torch.linalg.vector_norm(u.double(), dim=-1, keepdim=True), rtol=1e-15))
    True
    """
    if u.device.type != "cpu" or u.dtype == torch.float64 or u.shape[-1] <= NORM_CHUNK:
        return torch.linalg.vector_norm(u, ord=2, dim=-1, keepdim=True, dtype=torch.float64)
    pieces = [torch.linalg.vector_norm(c, ord=2, dim=-1, keepdim=True, dtype=torch.float64)
              for c in u.split(NORM_CHUNK, dim=-1)]
    return torch.linalg.vector_norm(torch.cat(pieces, dim=-1), ord=2, dim=-1, keepdim=True)


def combine(a: torch.Tensor, b: torch.Tensor, weight: float, norm: Norm, radius: float,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """The convex combination ``(1 - weight) a + weight b`` of two feasible points, kept feasible.

    For L2 the margin of :func:`inner_radius` covers the rounding; for L-infinity one clamp does.
    ``out`` (which may be ``a`` or ``b``) receives it instead of a new tensor.
    """
    out = torch.lerp(a, b, weight, out=out)
    return out.clamp_(-radius, radius) if norm == "linf" else out


def project(u: torch.Tensor, norm: Norm, radius: float) -> torch.Tensor:
    """Project ``u`` (one point, or one per row) in place onto the L2 ball or L-infinity box of ``radius``."""
    if norm == "linf":
        return u.clamp_(-radius, radius)
    factor = (radius / row_norms(u)).clamp(max=1.0)
    return u.mul_(factor.to(u.dtype))


class Pool:
    """Flat vectors the search no longer needs, kept for reuse instead of freed.

    On a CPU a fresh tensor of tens of millions of elements costs more to fault into memory than the
    arithmetic that fills it, and a search makes a few such vectors per iteration. Only the owner of a
    vector may hand it back (:meth:`give`), and only once nothing refers to it: the next :meth:`take`
    overwrites it. At most ``size`` vectors are kept; :meth:`clear` drops them all.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._free: list[torch.Tensor] = []

    def take(self, like: torch.Tensor) -> torch.Tensor:
        """A vector of ``like``'s shape, dtype and device with arbitrary contents."""
        for i, t in enumerate(self._free):
            if t.shape == like.shape and t.dtype == like.dtype and t.device == like.device:
                return self._free.pop(i)
        return torch.empty_like(like)

    def give(self, *dead: torch.Tensor) -> None:
        """Keep these (distinct, unreferenced) vectors for a later :meth:`take`."""
        for t in dead:
            if len(self._free) < self.size and all(t is not f for f in self._free):
                self._free.append(t)

    def clear(self) -> None:
        self._free.clear()


class Radius(Protocol):
    """What a feasible set is made of: the norm and the radius ``rho`` (a :class:`~sharpness.spec.Spec` is one)."""

    @property
    def norm(self) -> Norm: ...
    @property
    def rho(self) -> float: ...


class Ball(Protocol):
    """What the search needs of a feasible set (see :class:`FlatBall`)."""

    radius: float

    def start(self, numel: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...
    def project(self, u: torch.Tensor) -> torch.Tensor: ...
    def advance(self, u: torch.Tensor, g: torch.Tensor, step: torch.Tensor) -> torch.Tensor: ...
    def combine(self, a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor: ...
    def norm(self, u: torch.Tensor) -> torch.Tensor: ...


class FlatBall:
    """The L2 ball or L-infinity box of radius ``rho`` in normalised coordinates, for points in rows or alone.

    What the search needs of a feasible set: a random start, the projection, the ascent step followed
    by the projection, the convex combination that stays feasible, and the norm of a reported point.
    """

    def __init__(self, norm: Norm, rho: float, dtype: torch.dtype, pool: Pool | None = None) -> None:
        self.norm_kind: Norm = norm
        self.radius = inner_radius(rho, dtype, norm)
        self.pool = pool if pool is not None else Pool(size=0)

    def start(self, numel: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A point drawn uniformly from the ball or box."""
        if self.norm_kind == "linf":
            u = torch.rand(numel, generator=generator, device=like.device, dtype=like.dtype)
            return u.mul_(2 * self.radius).sub_(self.radius)
        u = torch.randn(numel, generator=generator, device=like.device, dtype=like.dtype)
        radius = self.radius * torch.rand((), generator=generator, device=like.device,
                                          dtype=torch.float64) ** (1.0 / numel)
        return u.mul_((radius / norm_of(u, "l2")).to(u.dtype))

    def project(self, u: torch.Tensor) -> torch.Tensor:
        return project(u, self.norm_kind, self.radius)

    def advance(self, u: torch.Tensor, g: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        r""":math:`P(u + \eta\, d)` with :math:`d = \mathrm{sign}(g)` (L-infinity) or :math:`g / \|g\|_2` (L2),
        in a new vector (one the search handed back to the pool, if any)."""
        out = ascent_step(u, g, step, self.norm_kind, out=self.pool.take(u))
        return project(out, self.norm_kind, self.radius)

    def combine(self, a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
        """The feasible convex combination, written into ``b`` (the point :meth:`advance` just made)."""
        return combine(a, b, weight, self.norm_kind, self.radius, out=b)

    def norm(self, u: torch.Tensor) -> torch.Tensor:
        return norm_of(u, self.norm_kind)


def ascent_step(u: torch.Tensor, g: torch.Tensor, step: torch.Tensor, norm: Norm,
                out: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`u + \eta\, d` with :math:`d = \mathrm{sign}(g)` (L-infinity) or :math:`g / \|g\|_2` (L2), row by row.

    The L2 direction's length need not be exact (the projection that follows enforces the
    radius), so its norm is taken in the working precision, one fused multiply-add after it.
    ``out`` (distinct from ``u`` and ``g``) receives the point; for L-infinity it holds the sign first,
    so that no other vector is made.

    >>> ascent_step(torch.zeros(2), torch.tensor([3.0, -4.0]), torch.tensor(10.0), "l2")
    tensor([ 6., -8.])
    """
    if norm == "linf":
        direction = torch.sign(g, out=out)
        return torch.addcmul(u, direction, step, out=direction)
    length = torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
    return torch.addcmul(u, g, step / length, out=out)


class Coordinates(Protocol):
    """What a :class:`Probe` needs of the coordinates ``u`` it takes its points in.

    :class:`WeightSpace` (normalised weights, possibly bent into a curved chart) is one; a random
    subspace of it (:class:`sharpness.cases.keskar.Subspace`) is another. ``flat`` says whether a point
    is exactly :math:`w_0 + c \\odot u` of the parameters ``params`` (then a pass may compute the
    weights itself, as the fast mode's functional engine does, instead of writing them);
    ``runs_exactly`` why the fast mode may not touch them (``None``: it may).
    """

    params: list[torch.Tensor]
    w0: torch.Tensor
    # The scale vector and its mask, read-only: coordinates may build them only when asked for.
    @property
    def c(self) -> torch.Tensor: ...
    @property
    def active(self) -> torch.Tensor: ...
    # Where a search hands back the vectors it no longer needs, and takes new ones from.
    pool: Pool
    # Why every point must be computed in the model's dtype, one at a time, whatever the mode (None: no reason).
    runs_exactly: str | None

    @property
    def numel(self) -> int: ...
    @property
    def flat(self) -> bool: ...
    def set(self, u: torch.Tensor) -> None: ...
    def reset(self) -> None: ...
    def grad_u(self, loss: torch.Tensor) -> torch.Tensor: ...
    def zeros(self) -> torch.Tensor: ...
    def ball(self, spec: Radius) -> Ball: ...
    def details(self) -> dict[str, Any]: ...


class WeightSpace:
    """The perturbed parameters of a model, addressed in normalised coordinates.

    A point is :math:`w_0 + c \\odot u`; a subclass with a curved chart changes it through
    :meth:`bend` (and the gradient through :meth:`pull_back`), supplies its own :meth:`ball` and
    says ``flat = False``.
    """

    flat = True
    runs_exactly: str | None = None

    def __init__(self, params: Sequence[nn.Parameter], names: Sequence[str], scaling: Scaling, eta: float,
                 filter_dims: dict[str, int]) -> None:
        self.params: list[torch.Tensor] = list(params)
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        with torch.no_grad():
            self.w0 = torch.cat([p.detach().reshape(-1) for p in self.params])
            self.c = torch.empty_like(self.w0)
            for p, name, out in zip(self.params, names, self.views(self.c)):
                scale_of(p, scaling, eta, filter_dims.get(name, 0), out=out)
        self.active = self.c > 0
        self._w = torch.empty_like(self.w0)
        self.pool = Pool()

    @property
    def per_parameter(self) -> bool:
        """Write points and gather gradients one parameter at a time: on the CPU, which pays per byte moved
        (an accelerator pays per kernel launched)."""
        return self.flat and self.w0.device.type == "cpu"

    @property
    def numel(self) -> int:
        return self.w0.numel()

    def rescaled(self, c: torch.Tensor) -> WeightSpace:
        """The same weights with another scale vector ``c`` (elements with ``c = 0`` again never perturbed)."""
        other = copy.copy(self)
        other.c, other.active = c, c > 0
        other._w = torch.empty_like(self.w0)
        other.pool = Pool()
        return other

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """One view of ``flat`` per parameter, in the parameter's shape."""
        return [t.view(s) for t, s in zip(flat.split(self.numels), self.shapes)]

    @torch.no_grad()
    def set(self, u: torch.Tensor) -> None:
        """Write the point of coordinates ``u`` (:math:`w_0 + c \\odot u` unless bent) into the parameters.

        On the CPU flat coordinates write each parameter straight from its slices of ``w0``, ``c`` and ``u``:
        one pass over memory instead of building the whole point and copying it (the same products, bit for
        bit). An accelerator pays per kernel launch rather than per byte, so there the point is built in
        one kernel and copied in one multi-tensor kernel.
        """
        if self.per_parameter:
            for p, w0, c, x in zip(self.params, self.views(self.w0), self.views(self.c), self.views(u)):
                torch.addcmul(w0, c, x, out=p.detach())
            return
        torch.addcmul(self.w0, self.c, u, out=self._w)
        self.bend(u, self._w)
        torch._foreach_copy_(self.params, self.views(self._w))

    def bend(self, u: torch.Tensor, w: torch.Tensor) -> None:
        """Change the point ``w = w0 + c * u`` in place (flat coordinates: nothing to do)."""

    def pull_back(self, g: torch.Tensor) -> None:
        """Change ``c * grad_w`` in place into the gradient in the coordinates (flat: nothing to do)."""

    def ball(self, spec: Radius) -> Ball:
        """The feasible set of ``spec`` (its norm and radius) in these coordinates."""
        return FlatBall(spec.norm, spec.rho, self.w0.dtype, self.pool)

    def details(self) -> dict[str, Any]:
        """What a measurement reports about the coordinates (flat: nothing)."""
        return {}

    @torch.no_grad()
    def reset(self) -> None:
        """Write the original weights back, bit for bit."""
        torch._foreach_copy_(self.params, self.views(self.w0))

    def grad_u(self, loss: torch.Tensor) -> torch.Tensor:
        """:math:`c \\odot \\nabla_w L` as a flat vector."""
        return self.gather(torch.autograd.grad(loss, self.params, allow_unused=True))

    def gather(self, grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Per-parameter gradients (``None``: unused) as :math:`c \\odot \\nabla_w L`, one flat vector.

        On the CPU each product is written straight into its slice of the flat vector (one pass over
        memory, no gathered copy); an accelerator gathers in one kernel and multiplies in another. The
        vector comes from :attr:`pool` when the search has handed back a dead one.
        """
        flat = self.pool.take(self.w0)
        if self.per_parameter:
            for g, c, out in zip(grads, self.views(self.c), self.views(flat)):
                torch.mul(g, c, out=out) if g is not None else out.zero_()
        else:
            torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                       for g, p in zip(grads, self.params)], out=flat).mul_(self.c)
        self.pull_back(flat)
        return flat

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.w0)


@dataclass
class Passes:
    """Forward and backward passes of the model, counted over every probe of one measurement."""

    forward: int = 0
    backward: int = 0


class Probe:
    """Loss (and error) at a point ``u`` on one batch, counting the passes it costs.

    Probes derived from one another (:meth:`derived`: other coordinates of the same model) share one
    :class:`Passes` count, so what a measurement cost is counted once, wherever its passes ran.
    """

    def __init__(self, objective: Objective, space: Coordinates, passes: Passes | None = None) -> None:
        self.objective = objective
        self.space = space
        self.passes = passes if passes is not None else Passes()

    @property
    def n_forward(self) -> int:
        return self.passes.forward

    @n_forward.setter
    def n_forward(self, value: int) -> None:
        self.passes.forward = value

    @property
    def n_backward(self) -> int:
        return self.passes.backward

    @n_backward.setter
    def n_backward(self, value: int) -> None:
        self.passes.backward = value

    def derived(self, space: Coordinates) -> Probe:
        """A probe of the same objective in other coordinates, counting into the same :class:`Passes`."""
        return Probe(self.objective, space, self.passes)

    def zeros(self) -> torch.Tensor:
        """The origin :math:`u = 0` in the shape the probe takes its points."""
        return self.space.zeros()

    def evaluate(self, u: torch.Tensor, batch: Batch, with_error: bool,
                 grad: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Loss, error and (with ``grad``) :math:`g_u` at ``u``; counts nothing (the callers do)."""
        self.space.set(u)
        with torch.enable_grad() if grad else torch.no_grad():
            loss, error = self.objective(batch, with_error)
            g = self.space.grad_u(loss) if grad else None
        return loss.detach(), error, g

    def value(self, u: torch.Tensor, batch: Batch, with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward only."""
        self.n_forward += 1
        loss, error, _ = self.evaluate(u, batch, with_error, grad=False)
        return loss, error

    def value_and_grad(self, u: torch.Tensor, batch: Batch,
                       with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One forward and one backward: loss, error and :math:`g_u`."""
        self.n_forward += 1
        self.n_backward += 1
        loss, error, g = self.evaluate(u, batch, with_error, grad=True)
        assert g is not None
        return loss, error, g
