r"""Curvature in normalised coordinates: the trace and top eigenvalue of :math:`D H D`.

With :math:`w = w_0 + c \odot u` the gradient in :math:`u` is :math:`g_u = c \odot \nabla_w L`, so the
Hessian in :math:`u` at :math:`u = 0` is :math:`D H D` with :math:`D = \mathrm{diag}(c)` and :math:`H`
the Hessian of the m-batch loss (``scaling="standard"``: :math:`D = I`). These are the second-order limits
of sharpness near a minimum: :math:`S_{avg}(\ell_2) \approx \rho^2/2\, \mathrm{tr}(DHD)` and
:math:`S_{max}(\ell_2) \approx \rho^2/2\, \lambda_{max}(DHD)`.

Hessian-vector products :math:`v \mapsto DHDv`, reported in ``Result.details["hvp"]``:

* ``double_backward``: :math:`\nabla_w L` is built once per m-batch with its graph; each product is one
  more backward, :math:`c \odot \nabla_w \langle \nabla_w L, c \odot v \rangle`. Exact.
* ``math_attention``: the same, with ``scaled_dot_product_attention`` held to its math kernel (plain,
  twice-differentiable operations) while the graph is built: the "eager attention" that fused kernels
  (flash attention on the CPU and GPU) need for second derivatives. Exact.
* ``finite_difference``: the central difference of gradients
  :math:`\|v\| (g_u(h\hat v) - g_u(-h\hat v)) / 2h`, two forward+backward passes, error
  :math:`O(h^2) + O(\epsilon / h)` for smooth losses; the step makes
  :math:`\|c \odot h \hat v\|_2 = \epsilon^{1/3} \max(\|w_0\|_2, 1)`. Across ReLU kinks it measures a smoothed
  curvature instead: in float32 (:math:`h \approx 0.5\%` of the weights) this can be far from the Hessian
  of a ReLU network, so it is the last resort.

``hvp="auto"`` tries them in this order, moving on only when autograd says that a second derivative is not
implemented (any other error propagates); ``double_backward`` and ``finite_difference`` force one method.
(A custom ``autograd.Function`` marked ``once_differentiable`` may instead drop second-order terms
without an error; force ``finite_difference`` for models that use one.)

The trace is Hutchinson's estimator :math:`\mathrm{tr}(A) = \mathbb E[v^\top A v]` with Rademacher probes
and its Monte-Carlo standard error, or Hutch++ (:func:`hutch_plus_plus`), which spends a third of the
products on finding the top of the spectrum and takes its trace exactly. The top eigenvalue is the
largest Ritz value of Lanczos with full reorthogonalisation (it keeps ``n_iters + 1`` vectors of the
parameter size); for a symmetric operator it never exceeds :math:`\lambda_{max}`, and the residual
:math:`\|A y - \theta y\|` bounds the distance to an eigenvalue.

>>> import torch
>>> a = torch.diag(torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64))
>>> eig = lanczos(lambda v: a @ v, torch.ones(3, dtype=torch.float64), n_steps=3, tol=1e-12)
>>> round(eig.value, 12), eig.converged
(3.0, True)
>>> g = torch.Generator().manual_seed(0)
>>> mean, var = hutchinson(lambda v: a @ v, torch.ones(3, dtype=torch.bool), 8, g)
>>> mean, var  # v^T A v = tr(A) for every Rademacher v of a diagonal A
(2.0, 0.0)
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from sharpness.objective import Batch
from sharpness.space import Probe, WeightSpace

MatVec = Callable[[torch.Tensor], torch.Tensor]

# How autograd says that a second derivative is missing.
_NO_DOUBLE_BACKWARD = re.compile(r"derivative for .* is not implemented|once_differentiable")

Method = Literal["double_backward", "math_attention", "finite_difference"]
# The methods tried in turn for each choice of Spec.hvp.
LADDERS: dict[str, tuple[Method, ...]] = {
    "auto": ("double_backward", "math_attention", "finite_difference"),
    "double_backward": ("double_backward",),
    "finite_difference": ("finite_difference",),
}


class HessianOperator:
    """:math:`v \\mapsto D H_S D v` at the unperturbed weights of ``space``, for one m-batch (``probe`` in ``space``).

    Attributes:
        methods: the methods still to try; the first is the one in use once a product succeeded.
    """

    def __init__(self, probe: Probe, space: WeightSpace, batch: Batch, methods: tuple[Method, ...]) -> None:
        self.probe = probe
        self.space = space
        self.batch = batch
        self.methods = methods
        self._grads: list[torch.Tensor | None] | None = None
        eps = torch.finfo(space.w0.dtype).eps
        scale = torch.linalg.vector_norm(space.w0 * space.active, dtype=torch.float64).clamp_min(1.0)
        self._fd_norm = (eps ** (1 / 3) * scale).to(space.w0.dtype)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        while self.methods[0] != "finite_difference":
            try:
                return self._double_backward(v)
            except RuntimeError as e:
                if len(self.methods) == 1 or not _NO_DOUBLE_BACKWARD.search(str(e)):
                    raise
            self.methods, self._grads = self.methods[1:], None
        return self._finite_difference(v)

    def _double_backward(self, v: torch.Tensor) -> torch.Tensor:
        space = self.space
        if self._grads is None:
            space.set(space.zeros())
            self.probe.n_forward += 1
            self.probe.n_backward += 1
            math_only = self.methods[0] == "math_attention"
            with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]) if math_only else contextlib.nullcontext():
                loss, _ = self.probe.objective(self.batch, False)
                grads = torch.autograd.grad(loss, space.params, create_graph=True, allow_unused=True)
            # A gradient without a graph is constant: its rows of H are zero.
            self._grads = [g if g is not None and g.requires_grad else None for g in grads]
        cv = (space.c * v).split(space.numels)
        pairs = [(g, t.view_as(g)) for g, t in zip(self._grads, cv) if g is not None]
        self.probe.n_backward += 1
        if not pairs:
            return torch.zeros_like(v)
        hv = torch.autograd.grad([g for g, _ in pairs], space.params, grad_outputs=[cv for _, cv in pairs],
                                 retain_graph=True, allow_unused=True)
        flat = torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1) for h, p in zip(hv, space.params)])
        return flat.mul_(space.c)

    def _finite_difference(self, v: torch.Tensor) -> torch.Tensor:
        space = self.space
        norm = torch.linalg.vector_norm(v)
        direction = v / norm.clamp_min(torch.finfo(v.dtype).tiny)
        h = self._fd_norm / torch.linalg.vector_norm(space.c * direction).clamp_min(torch.finfo(v.dtype).tiny)
        _, _, g_plus = self.probe.value_and_grad(direction * h, self.batch, False)
        _, _, g_minus = self.probe.value_and_grad(direction * -h, self.batch, False)
        return (g_plus - g_minus).mul_(norm / (2 * h))


def rademacher(mask: torch.Tensor, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Independent signs on the ``True`` entries of ``mask``, zero elsewhere."""
    signs = torch.randint(0, 2, mask.shape, generator=generator, device=mask.device).to(dtype).mul_(2).sub_(1)
    return signs.mul_(mask)


def hutchinson(matvec: MatVec, mask: torch.Tensor, n_probes: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float64) -> tuple[float, float]:
    """Hutchinson's trace estimate over the ``mask`` entries and the variance of that mean (NaN for one probe)."""
    quads = torch.stack([torch.dot(v, matvec(v)).double() for v in
                         (rademacher(mask, generator, dtype) for _ in range(n_probes))])
    var = float(quads.var() / n_probes) if n_probes > 1 else math.nan
    return float(quads.mean()), var


def hutch_plus_plus(matvec: MatVec, mask: torch.Tensor, n_products: int, generator: torch.Generator,
                    dtype: torch.dtype = torch.float64) -> tuple[float, float]:
    r"""Hutch++ (Meyer, Musco, Musco & Woodruff 2021): the trace from ``n_products`` products, exact on the top.

    With :math:`k = \lfloor n/3 \rfloor` Rademacher probes :math:`S` (on the ``mask`` entries),
    :math:`Q` an orthonormal basis of :math:`AS` and :math:`n - 2k` further probes :math:`g_j`,

    .. math:: \mathrm{tr}(A) \approx \mathrm{tr}(Q^\top A Q)
              + \frac{1}{n - 2k} \sum_j g_j^\top (I - QQ^\top) A (I - QQ^\top) g_j .

    It is unbiased. The first term takes the dominant part of the spectrum exactly, so for a Hessian
    whose trace is carried by a few large eigenvalues its error is far below Hutchinson's at equal
    cost; only the second term is random, and the variance returned is that of its mean (NaN with
    one such probe). It keeps :math:`k` vectors of the parameter size.

    >>> x = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)  # no sign vector is orthogonal to x
    >>> a = torch.outer(x, x)
    >>> g = torch.Generator().manual_seed(0)
    >>> est, var = hutch_plus_plus(lambda v: a @ v, torch.ones(4, dtype=torch.bool), 5, g)
    >>> round(est, 10), round(var, 20)  # rank one, found by the sketch: exactly 1 + 4 + 16 + 64
    (85.0, 0.0)
    """
    k = n_products // 3
    sketch = torch.stack([matvec(rademacher(mask, generator, dtype)) for _ in range(k)], dim=1)
    q = torch.linalg.qr(sketch).Q
    top = sum(float(torch.dot(col, matvec(col))) for col in q.T.contiguous())
    quads = []
    for _ in range(n_products - 2 * k):
        g = rademacher(mask, generator, dtype)
        g = g - q @ (q.T @ g)
        quads.append(torch.dot(g, matvec(g)).double())
    rest = torch.stack(quads)
    var = float(rest.var() / len(rest)) if len(rest) > 1 else math.nan
    return top + float(rest.mean()), var


@dataclass(frozen=True)
class Eigen:
    """Largest Ritz value of Lanczos and how far it can be from an eigenvalue."""

    value: float
    residual: float
    iterations: int
    converged: bool


def lanczos(matvec: MatVec, v0: torch.Tensor, n_steps: int, tol: float) -> Eigen:
    """Largest eigenvalue of a symmetric operator by Lanczos with full reorthogonalisation.

    Stops after ``n_steps`` products, or once the residual bound ``beta_k |s_k|`` of the top Ritz pair is
    at most ``tol * |theta|`` (or the Krylov space is invariant).
    """
    n_steps = min(n_steps, v0.numel())
    start = float(torch.linalg.vector_norm(v0))
    if start == 0.0:  # nothing to perturb
        return Eigen(0.0, 0.0, 0, True)
    basis = v0.new_zeros(n_steps + 1, v0.numel())
    basis[0] = v0 / start
    alphas: list[float] = []
    betas: list[float] = []
    theta, residual = math.nan, math.inf
    for k in range(n_steps):
        w = matvec(basis[k])
        alphas.append(float(torch.dot(basis[k], w)))
        done = basis[: k + 1]
        for _ in range(2):  # twice is enough to keep the basis orthogonal in floating point
            w = w - done.T @ (done @ w)
        betas.append(float(torch.linalg.vector_norm(w)))
        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        off = torch.tensor(betas[:-1], dtype=torch.float64)
        tri += torch.diag(off, 1) + torch.diag(off, -1)
        values, vectors = torch.linalg.eigh(tri)
        theta, residual = float(values[-1]), betas[-1] * abs(float(vectors[-1, -1]))
        scale = max(abs(theta), max(abs(a) for a in alphas), torch.finfo(v0.dtype).tiny)
        if residual <= tol * scale or betas[-1] <= torch.finfo(v0.dtype).eps * scale:
            return Eigen(theta, residual, k + 1, True)
        basis[k + 1] = w / betas[-1]
    return Eigen(theta, residual, n_steps, n_steps == v0.numel())
