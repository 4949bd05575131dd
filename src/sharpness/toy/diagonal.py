r"""Diagonal linear networks: which sharpness tracks generalization depends on the data.

The network is :math:`f(x) = \langle u \odot v, x\rangle` with parameters
:math:`u, v \in \mathbb R^d` and the linear predictor :math:`\beta = u \odot v`; the loss
is half the mean squared error, :math:`L(u, v) = \frac{1}{2n}\sum_j (f(x_j) - y_j)^2`.
Write :math:`s_i^2 = \frac1n \sum_j x_{ji}^2` for the empirical second moment of feature
:math:`i` ("unit-norm columns" means :math:`s = 1`, i.e. :math:`X/\sqrt n` has unit-norm
columns). With this normalisation, at *every* point (not only at minima):

* Hessian trace: :math:`\mathrm{tr}\,H = \sum_i s_i^2 (u_i^2 + v_i^2)` (the residual part
  of :math:`H` only couples :math:`u_i` with :math:`v_i`, so its diagonal is zero);
* adaptive (elementwise) trace, :math:`D = \mathrm{diag}(|u|, |v|)`:
  :math:`\mathrm{tr}\,DHD = 2 \sum_i s_i^2 \beta_i^2`, whatever the factorisation of
  :math:`\beta`;
* average-case sharpness, exactly (the model is bilinear, so the expectation is a
  polynomial in :math:`\rho`): with :math:`\delta = c \odot \rho\xi`, per-coordinate variance
  :math:`\sigma^2` of :math:`\rho\xi` (:math:`\rho^2` for ``l2``, :math:`\rho^2/3` for ``linf``)
  and scales :math:`c_u, c_v` (1, or :math:`|u|, |v|`),
  :math:`S_{avg} = \tfrac12 \sum_i s_i^2 [\sigma^2 (u_i^2 c_{v_i}^2 + v_i^2 c_{u_i}^2)
  + \sigma^4 c_{u_i}^2 c_{v_i}^2]`, i.e. :math:`\frac{\rho^2}{2}\mathrm{tr}(DHD)` plus a
  :math:`\rho^4` term.

Gradient flow from :math:`u_0 = \alpha\mathbf 1, v_0 = 0` conserves :math:`u^2 - v^2 = \alpha^2`,
so :math:`u_i^2 + v_i^2 = \sqrt{\alpha^4 + 4\beta_i^2}`: :math:`\mathrm{tr}\,H \approx 2\|\beta\|_1`
for small :math:`\alpha` (rich regime) and :math:`\approx d\alpha^2` for large :math:`\alpha`
(kernel regime). Its limit is :math:`\beta = \frac{\alpha^2}{2}\sinh(X^\top z)` with :math:`z`
solving :math:`X\beta = y` (:func:`flow_limit`). At an interpolating point of a whitened design
(:math:`X^\top X / n = I`, so :math:`n \ge d`), :math:`H` is block-diagonal over coordinates and
:math:`\lambda_{max}(H) = \max_i (u_i^2 + v_i^2)`, :math:`\lambda_{max}(DHD) = 2\|\beta\|_\infty^2`.

>>> u, v = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
>>> x = torch.tensor([[1.0, 1.0], [1.0, -1.0]])   # s = (1, 1)
>>> float(hessian_trace(u, v, x)), float(adaptive_hessian_trace(u, v, x))   # (1 + 9) + (4 + 1), 2 (9 + 4)
(15.0, 26.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from sharpness.errors import SharpnessError
from sharpness.measure import measure
from sharpness.spec import Geometry, Norm, Scaling, Spec
from sharpness.symmetry import Block, Piece
from sharpness.toy.configs import DiagonalConfig, Trainer

Target = Literal["sparse", "dense"]


class DiagonalNet(nn.Module):
    r"""Diagonal linear network :math:`f(x) = \langle u \odot v, x \rangle` (output shape ``(N,)``)."""

    def __init__(self, u: Tensor, v: Tensor) -> None:
        super().__init__()
        if u.shape != v.shape or u.dim() != 1:
            raise SharpnessError(f"u and v must be vectors of one shape, got {tuple(u.shape)} and {tuple(v.shape)}")
        self.u = nn.Parameter(u.detach().clone())
        self.v = nn.Parameter(v.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x @ (self.u * self.v)

    def sharpness_blocks(self, fold_bias: bool) -> list[Block]:
        """The symmetry :math:`(u_i, v_i) \\mapsto (\\alpha_i u_i, v_i / \\alpha_i)`: ``d`` blocks of GL(1)."""
        return [Block("", "gl1", self.u.numel(), 1, (Piece("u"),), (Piece("v"),))]


def half_mse(output: Tensor, target: Tensor) -> Tensor:
    """The loss: half the mean squared error."""
    return 0.5 * (output - target).pow(2).mean()


# ---------------------------------------------------------------------- data
@dataclass(frozen=True)
class Regression:
    """A noiseless regression task ``y = X beta_star`` with feature scales ``scales``.

    Test inputs are ``N(0, diag(scales^2))``, so the test loss of a predictor is the
    population value ``0.5 * sum_i scales_i^2 (beta_i - beta_star_i)^2``.
    """

    x: Tensor
    y: Tensor
    beta_star: Tensor
    scales: Tensor

    def test_loss(self, beta: Tensor) -> Tensor:
        """Population half-MSE of ``beta`` (one value per row when ``beta`` is 2-D)."""
        return 0.5 * ((beta - self.beta_star) * self.scales).pow(2).sum(-1)


def make_regression(n: int, d: int, target: Target = "sparse", sparsity: float = 0.9, scale_spread: float = 1.0,
                    support_scale: float = 1.0, seed: int = 0, dtype: torch.dtype = torch.float64) -> Regression:
    """Gaussian features, column ``i`` rescaled to empirical second moment ``scales_i^2``.

    Args:
        n, d: examples and features.
        target: ``"sparse"``: ``round((1 - sparsity) d)`` entries ``+-1``, the rest 0;
            ``"dense"``: every entry ``N(0, 1 - sparsity)`` (the same expected squared norm).
        scale_spread: feature scales are log-uniform in ``[1/scale_spread, scale_spread]``
            (1: unit-norm columns).
        support_scale: the scales of the features where the target is non-zero are
            multiplied by this (1: no change; < 1: the relevant features are the weak ones).
        seed: seeds everything drawn.

    >>> data = make_regression(8, 20, seed=1)
    >>> int((data.beta_star != 0).sum()), torch.allclose(data.x.pow(2).mean(0), data.scales.pow(2))
    (2, True)
    """
    if not 0.0 <= sparsity < 1.0:
        raise SharpnessError(f"sparsity must lie in [0, 1), got {sparsity}")
    if scale_spread < 1.0:
        raise SharpnessError(f"scale_spread must be >= 1, got {scale_spread}")
    if support_scale <= 0.0:
        raise SharpnessError(f"support_scale must be > 0, got {support_scale}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    z = z / z.pow(2).mean(0).sqrt()
    scales = torch.exp((2 * torch.rand(d, generator=g, dtype=dtype) - 1) * math.log(scale_spread))
    if target == "sparse":
        k = max(1, round((1 - sparsity) * d))
        beta_star = torch.zeros(d, dtype=dtype)
        signs = torch.randint(0, 2, (k,), generator=g).to(dtype) * 2 - 1
        beta_star[torch.randperm(d, generator=g)[:k]] = signs
    elif target == "dense":
        beta_star = torch.randn(d, generator=g, dtype=dtype) * math.sqrt(1 - sparsity)
    else:
        raise SharpnessError(f"unknown target {target!r}; expected 'sparse' or 'dense'")
    scales = torch.where(beta_star != 0, scales * support_scale, scales)
    x = z * scales
    return Regression(x, x @ beta_star, beta_star, scales)


def whitened_design(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``X`` (n x d, n >= d) with ``X^T X / n = I``: sqrt(n) times orthonormal columns.

    >>> x = whitened_design(6, 4)
    >>> bool(torch.allclose(x.T @ x / 6, torch.eye(4, dtype=x.dtype)))
    True
    """
    if n < d:
        raise SharpnessError(f"a whitened design needs n >= d, got n={n}, d={d}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=dtype))
    return q * math.sqrt(n)


# ---------------------------------------------------------------- closed forms
def hessian_trace(u: Tensor, v: Tensor, x: Tensor) -> Tensor:
    r""":math:`\mathrm{tr}\,H = \sum_i s_i^2 (u_i^2 + v_i^2)`, at any point (rows of ``u, v``: networks)."""
    return (x.pow(2).mean(0) * (u.pow(2) + v.pow(2))).sum(-1)


def flow_hessian_trace(beta: Tensor, alpha: Tensor | float, x: Tensor) -> Tensor:
    r""":math:`\sum_i s_i^2 \sqrt{\alpha^4 + 4\beta_i^2}`: the trace where :math:`u^2 - v^2 = \alpha^2`."""
    a = torch.as_tensor(alpha, dtype=beta.dtype)
    a4 = a.pow(4).unsqueeze(-1) if a.dim() else a.pow(4)
    return (x.pow(2).mean(0) * (a4 + 4 * beta.pow(2)).sqrt()).sum(-1)


def adaptive_hessian_trace(u: Tensor, v: Tensor, x: Tensor) -> Tensor:
    r""":math:`\mathrm{tr}(DHD) = 2\sum_i s_i^2 \beta_i^2` with :math:`D = \mathrm{diag}(|u|, |v|)`, at any point."""
    return 2 * (x.pow(2).mean(0) * (u * v).pow(2)).sum(-1)


def top_eigenvalue(u: Tensor, v: Tensor, scaling: Scaling) -> Tensor:
    r""":math:`\lambda_{max}` of :math:`H` (standard) or :math:`DHD` (elementwise) at an interpolating
    point of a whitened design: :math:`\max_i (u_i^2 + v_i^2)` or :math:`2\max_i \beta_i^2`.

    ``u`` and ``v`` are one-dimensional, so ``filterwise`` is ``elementwise`` here (eta = 0).
    """
    if scaling == "standard":
        return (u.pow(2) + v.pow(2)).amax(-1)
    return 2 * (u * v).pow(2).amax(-1)


def average_sharpness(u: Tensor, v: Tensor, x: Tensor, rho: float, scaling: Scaling, norm: Norm) -> Tensor:
    r"""Exact average-case sharpness of the half-MSE at any point (see the module docstring), eta = 0.

    >>> u, v, x = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.0]), torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    >>> round(float(average_sharpness(u, v, x, 0.1, "standard", "l2")), 6)   # 0.01/2 * 5.25 + 2 * 1e-4/2
    0.02635
    """
    sigma2 = rho**2 if norm == "l2" else rho**2 / 3
    cu, cv = (torch.ones_like(u), torch.ones_like(v)) if scaling == "standard" else (u.abs(), v.abs())
    per_coord = sigma2 * (u.pow(2) * cv.pow(2) + v.pow(2) * cu.pow(2)) + sigma2**2 * cu.pow(2) * cv.pow(2)
    return 0.5 * (x.pow(2).mean(0) * per_coord).sum(-1)


# ------------------------------------------------------------------- training
@dataclass(frozen=True)
class Trained:
    """Networks trained from ``u0 = alpha 1, v0 = 0``: one row of ``u, v`` per alpha."""

    alphas: Tensor
    u: Tensor
    v: Tensor
    train_loss: Tensor
    steps: Tensor

    @property
    def beta(self) -> Tensor:
        return self.u * self.v

    def net(self, i: int) -> DiagonalNet:
        return DiagonalNet(self.u[i], self.v[i])


def train_gd(x: Tensor, y: Tensor, alphas: Tensor, target_loss: float = 1e-5, max_steps: int = 100_000,
             max_move: float = 0.003) -> Trained:
    r"""Full-batch gradient descent on :math:`(u, v)` for every ``alpha`` at once, each stopped at ``target_loss``.

    The step adapts: a step that lowers the loss is taken and the next one is 1.25 times
    larger; one that does not is refused and halved (the first is the safe
    :math:`1 / (\lambda_{max}(X^\top X/n)\max_i(u_i^2 + v_i^2))`). It is also capped at
    :math:`\epsilon / \|g\|_\infty` with :math:`g = \nabla_\beta L` and :math:`\epsilon` = ``max_move``:
    one step multiplies :math:`u_i^2 - v_i^2` by :math:`1 - \eta^2 g_i^2`, so the cap keeps the
    iterates close to gradient flow, whose conserved quantity drifts by about
    :math:`\epsilon \sum_k \eta_k |g_i|` in total (a few percent at the default).
    """
    n, d = x.shape
    alphas = alphas.to(x.dtype)
    u = alphas[:, None].expand(-1, d).clone()
    v = torch.zeros_like(u)
    r = (u * v) @ x.T - y
    loss = 0.5 * r.pow(2).mean(1)
    eta = 1 / (torch.linalg.eigvalsh(x.T @ x / n)[-1] * (u.pow(2) + v.pow(2)).amax(1))
    steps = torch.zeros(len(alphas), dtype=torch.long)
    for _ in range(max_steps):
        active = loss > target_loss
        if not bool(active.any()):
            break
        g = r @ x / n
        eta = torch.minimum(eta, max_move / g.abs().amax(1))
        step = eta[:, None] * g
        new_u, new_v = u - step * v, v - step * u
        new_r = (new_u * new_v) @ x.T - y
        new_loss = 0.5 * new_r.pow(2).mean(1)
        ok = (new_loss < loss) & active
        keep = ok[:, None]
        u, v, r = torch.where(keep, new_u, u), torch.where(keep, new_v, v), torch.where(keep, new_r, r)
        loss = torch.where(ok, new_loss, loss)
        eta = torch.where(ok, 1.25 * eta, 0.5 * eta)
        steps += active
    return Trained(alphas, u, v, loss, steps)


def flow_limit(x: Tensor, y: Tensor, alphas: Tensor, tol: float = 1e-10, max_iters: int = 200) -> Trained:
    r"""The limit of gradient flow from :math:`u_0 = \alpha\mathbf 1, v_0 = 0`, exactly.

    Along the flow :math:`\beta = \frac{\alpha^2}{2}\sinh\theta` with :math:`\theta \in \mathrm{range}(X^\top)`,
    :math:`u = \alpha\cosh(\theta/2)`, :math:`v = \alpha\sinh(\theta/2)`. The limit interpolates, so
    :math:`\theta = X^\top z` where :math:`z` minimises the strictly convex
    :math:`\frac{\alpha^2}{2}\sum_i\cosh((X^\top z)_i) - y^\top z` (needs rank ``X`` = n): damped Newton.

    >>> x = torch.tensor([[1.0, 1.0]], dtype=torch.float64); y = torch.tensor([2.0], dtype=torch.float64)
    >>> flow_limit(x, y, torch.tensor([0.1])).beta.round(decimals=9)   # symmetric: the features share the target
    tensor([[1., 1.]], dtype=torch.float64)
    """
    rows = [_flow_limit_one(x, y, float(a), tol, max_iters) for a in alphas]
    theta = torch.stack(rows)
    a = alphas.to(x.dtype)[:, None]
    u, v = a * torch.cosh(theta / 2), a * torch.sinh(theta / 2)
    loss = 0.5 * ((u * v) @ x.T - y).pow(2).mean(1)
    return Trained(alphas.to(x.dtype), u, v, loss, torch.zeros(len(alphas), dtype=torch.long))


def _flow_limit_one(x: Tensor, y: Tensor, alpha: float, tol: float, max_iters: int) -> Tensor:
    half_a2 = alpha**2 / 2

    def objective(z: Tensor) -> Tensor:
        return half_a2 * torch.cosh(x.T @ z).sum() - y @ z

    z = torch.zeros(x.shape[0], dtype=x.dtype)
    value = objective(z)
    for _ in range(max_iters):
        theta = x.T @ z
        grad = x @ (half_a2 * torch.sinh(theta)) - y
        if float(grad.abs().max()) <= tol * max(1.0, float(y.abs().max())):
            return x.T @ z
        hess = (x * (half_a2 * torch.cosh(theta))) @ x.T
        step = torch.linalg.solve(hess, grad)
        decrement = float(grad @ step)
        t = 1.0
        while True:  # Armijo backtracking; below round-off of the objective the full step is taken
            candidate = z - t * step
            new = objective(candidate)
            close = decrement < 1e-12 * abs(float(value))
            if close or (torch.isfinite(new) and new <= value - 1e-4 * t * decrement):
                break
            t /= 2
            if t < 1e-30:
                raise SharpnessError(f"flow_limit: line search failed at alpha={alpha}")
        z, value = candidate, new
    raise SharpnessError(f"flow_limit: Newton did not converge in {max_iters} iterations at alpha={alpha}")


def train(data: Regression, alphas: Tensor, trainer: Trainer = "gd", target_loss: float = 1e-5) -> Trained:
    """Train one network per ``alpha`` on ``data`` with gradient descent or its exact flow limit."""
    if trainer == "gd":
        return train_gd(data.x, data.y, alphas, target_loss)
    if trainer == "flow":
        return flow_limit(data.x, data.y, alphas)
    raise SharpnessError(f"unknown trainer {trainer!r}; expected 'gd' or 'flow'")


# ------------------------------------------------------------------ experiment
MEASURES = ("l1_norm", "l2_norm", "hessian_trace", "adaptive_trace", "worst_standard", "worst_adaptive",
            "worst_geodesic_inv", "worst_geodesic_mix", "average_standard", "average_adaptive", "eigen_standard",
            "eigen_adaptive")
# Kendall tau with the test loss reported by da Silva et al. (2025, Table 1) for 50 diagonal nets on a sparse target.
PAPER_TAU = {"worst_adaptive": -0.68, "worst_geodesic_inv": -0.83, "worst_geodesic_mix": -0.86}


def specs(config: DiagonalConfig) -> dict[str, Spec]:
    r"""The definitions measured on every network (L2, m = n: one batch), standard and adaptive.

    ``worst`` and ``average`` are the sharpness values; ``eigen`` is the raw :math:`\lambda_{max}(DHD)`
    (Lanczos), the second-order model of the worst case (its :math:`\rho^2/2` times). ``worst_geodesic_*``
    is geodesic sharpness on the quotient by the rescalings :math:`(u_i, v_i) \mapsto (a u_i, v_i / a)`.
    """
    worst: dict[str, Any] = {"case": "worst", "n_iters": config.n_iters, "n_restarts": config.n_restarts,
                             "init": "random", "seed": config.seed}
    average: dict[str, Any] = {"case": "average", "n_iters": config.n_draws, "antithetic": True,
                               "seed": config.seed}
    out = {}
    radii: tuple[tuple[str, Scaling, float], ...] = (("standard", "standard", config.rho_standard),
                                                     ("adaptive", "elementwise", config.rho_adaptive))
    for name, scaling, rho in radii:
        out[f"worst_{name}"] = Spec(norm="l2", rho=rho, scaling=scaling, **worst)
        out[f"average_{name}"] = Spec(norm="l2", rho=rho, scaling=scaling, **average)
        out[f"eigen_{name}"] = Spec(case="eigen", norm="l2", rho=1.0, scaling=scaling, n_iters=config.n_lanczos)
    metrics: tuple[tuple[Geometry, float], ...] = (("inv", config.rho_inv), ("mix", config.rho_mix))
    for metric, rho in metrics:
        out[f"worst_geodesic_{metric}"] = Spec(norm="l2", rho=rho, geometry=metric, second_order=config.geodesic_map,
                                               **worst)
    return out


def run_task(config: DiagonalConfig, task: dict[str, Any]) -> dict[str, Any]:
    """Train ``n_nets`` networks on one task; measure each; Kendall tau of every measure against test loss."""
    from scipy.stats import kendalltau

    data = make_regression(config.n, config.d, sparsity=config.sparsity, seed=config.seed, **task)
    alphas = torch.logspace(math.log10(config.alpha_min), math.log10(config.alpha_max), config.n_nets,
                            dtype=torch.float64)
    nets = train(data, alphas, config.trainer, config.target_loss)
    beta = nets.beta
    rows: dict[str, list[float]] = {
        "alpha": alphas.tolist(),
        "train_loss": nets.train_loss.tolist(),
        "steps": nets.steps.tolist(),
        "test_loss": data.test_loss(beta).tolist(),
        "l1_norm": beta.abs().sum(1).tolist(),
        "l2_norm": beta.norm(dim=1).tolist(),
        "hessian_trace": hessian_trace(nets.u, nets.v, data.x).tolist(),
        "flow_trace": flow_hessian_trace(beta, alphas, data.x).tolist(),
        "adaptive_trace": adaptive_hessian_trace(nets.u, nets.v, data.x).tolist(),
        "conservation_error": ((nets.u.pow(2) - nets.v.pow(2)) / alphas[:, None] ** 2 - 1).abs().amax(1).tolist(),
    }
    batch = [(data.x, data.y)]
    for name, spec in specs(config).items():
        rows[name] = [measure(nets.net(i), batch, spec, loss_fn=half_mse).value for i in range(len(alphas))]
        if spec.case == "average":
            exact = average_sharpness(nets.u, nets.v, data.x, spec.rho, spec.scaling, spec.norm)
            rows[f"{name}_exact"] = exact.tolist()
    tau = {m: float(kendalltau(rows[m], rows["test_loss"]).statistic) for m in MEASURES}
    return {"task": task, "networks": rows, "kendall_tau": tau}


def run(config: DiagonalConfig) -> dict[str, Any]:
    """Every task of the config, plus the closed-form checks, as one JSON-ready dict."""
    return {
        "config": dict(config.__dict__),
        "loss": "0.5 * mean squared error; s_i^2 = mean_j x_ji^2 (1 for unit-norm columns of X / sqrt(n))",
        "specs": {k: str(s) for k, s in specs(config).items()},
        "tasks": {name: run_task(config, task) for name, task in config.tasks().items()},
        "checks": closed_form_checks(config.seed),
    }


def closed_form_checks(seed: int = 0) -> dict[str, float]:
    """Relative errors of the closed forms against autograd Hessians on small sizes."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    # Trace forms: any point (not a minimum) of a design with n < d and uneven feature scales.
    data = make_regression(6, 9, "dense", scale_spread=3.0, seed=seed)
    u, v = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64)
    h = full_hessian(u, v, data.x, data.y)
    dvec = torch.cat([u.abs(), v.abs()])
    out["trace"] = _rel(torch.trace(h), hessian_trace(u, v, data.x))
    out["adaptive_trace"] = _rel(torch.trace(dvec[:, None] * h * dvec), adaptive_hessian_trace(u, v, data.x))
    # Eigenvalue forms: interpolating point of a whitened design (n >= d).
    x = whitened_design(12, 5, seed)
    u, v = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    h = full_hessian(u, v, x, x @ (u * v))
    dvec = torch.cat([u.abs(), v.abs()])
    out["top_eigenvalue"] = _rel(torch.linalg.eigvalsh(h)[-1], top_eigenvalue(u, v, "standard"))
    out["adaptive_top_eigenvalue"] = _rel(torch.linalg.eigvalsh(dvec[:, None] * h * dvec)[-1],
                                          top_eigenvalue(u, v, "elementwise"))
    return out


def full_hessian(u: Tensor, v: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """The ``2d x 2d`` Hessian of the half-MSE in ``(u, v)`` by autograd."""
    d = u.numel()

    def loss(w: Tensor) -> Tensor:
        return half_mse(x @ (w[:d] * w[d:]), y)

    hessian = torch.autograd.functional.hessian(loss, torch.cat([u, v]))
    assert isinstance(hessian, Tensor)
    return hessian


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs() / b.abs().clamp_min(1e-300))


# ---------------------------------------------------------------------- figure
def plot(results: dict[str, Any], path: str) -> None:
    """One row per task: test loss against each measure, coloured by log10(alpha), Kendall tau in the corner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    shown = ("l1_norm", "l2_norm", "hessian_trace", "adaptive_trace", "worst_standard", "worst_adaptive",
             "worst_geodesic_inv", "worst_geodesic_mix")
    spans_decades = ("hessian_trace", "worst_standard")
    fig, axes = plt.subplots(len(tasks), len(shown), figsize=(3.0 * len(shown), 2.6 * len(tasks)), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.92, top=0.95, bottom=0.05, wspace=0.3, hspace=0.25)
    for i, (row, (name, res)) in enumerate(zip(axes, tasks.items())):
        nets = res["networks"]
        colour = [math.log10(a) for a in nets["alpha"]]
        for ax, m in zip(row, shown):
            points = ax.scatter(nets[m], nets["test_loss"], c=colour, cmap="viridis", s=10)
            if m in spans_decades:
                ax.set_xscale("log")
            ax.text(0.03, 0.9, f"tau = {res['kendall_tau'][m]:+.2f}", transform=ax.transAxes, fontsize=9)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(m, fontsize=10)
        row[0].set_ylabel(f"{name}\ntest loss", fontsize=9)
    fig.colorbar(points, cax=fig.add_axes((0.94, 0.3, 0.01, 0.4)), label="log10 alpha")
    fig.savefig(path, dpi=110)
    plt.close(fig)
