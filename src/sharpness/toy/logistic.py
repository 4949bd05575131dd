r"""Logistic regression: adaptive sharpness is not invariant to the scale of a linear classifier.

Every :math:`\alpha w` with :math:`\alpha > 0` is the same classifier, yet its sharpness moves by
orders of magnitude along the ray. The binary model is written with two logits
:math:`(-z/2, z/2)`, :math:`z = \langle w, x\rangle`, so that the default cross-entropy is the
logistic loss :math:`\ell(m) = \log(1 + e^{-m})` of the margin :math:`m = \pm z`, and logit
normalisation applies: it maps the logits to :math:`\pm(-1, 1)/\sqrt2`, i.e. the loss becomes
:math:`\ell(\sqrt2\,\mathrm{sign}(m))` (the paper's notebook uses :math:`\mathrm{sign}(m)`).

Three radii, all through :class:`~sharpness.spec.Spec` scalings:

* ``standard``: :math:`\|\delta\|_2 \le \rho` (``scaling="standard"``);
* ``elementwise``: :math:`\delta = |w| \odot u`, :math:`\|u\|_2 \le \rho` (adaptive);
* ``norm``: :math:`\|\delta\|_2 \le \rho\|w\|_2` — ``scaling="filterwise"``, because the
  weight is one output filter of shape ``(1, d)``.

For one example (m = 1) the worst case is closed-form: the loss is decreasing in the margin and
the margin is linear in :math:`\delta`, so the maximiser is :math:`\delta \propto -y\,c \odot c \odot x`
and the margin drops by exactly :math:`\rho\|c \odot x\|_2`:

>>> w = torch.tensor([[3.0, 4.0]]); x = torch.tensor([[1.0, 0.0]])
>>> margin_drop(w, x, 0.5, "norm"), margin_drop(w, x, 0.5, "elementwise")
(tensor([2.5000]), tensor([1.5000]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sharpness.errors import SharpnessError
from sharpness.measure import measure
from sharpness.spec import Scaling, Spec
from sharpness.toy.configs import LogisticConfig

Radius = Literal["standard", "elementwise", "norm"]
RADII: dict[Radius, Scaling] = {"standard": "standard", "elementwise": "elementwise", "norm": "filterwise"}


class LinearClassifier(nn.Module):
    """Binary linear classifier with weight ``(1, d)`` and logits ``(-z/2, z/2)``."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(w.detach().reshape(1, -1).clone())

    def forward(self, x: Tensor) -> Tensor:
        z = x @ self.weight.T
        return torch.cat([-z / 2, z / 2], dim=1)

    def scaled(self, alpha: float) -> LinearClassifier:
        """The same classifier with weight ``alpha * w``."""
        return LinearClassifier(alpha * self.weight)


@dataclass(frozen=True)
class GaussianClasses:
    """Two Gaussian classes with means ``+mean`` (label 1) and ``-mean`` (label 0), ``||mean|| = 1``."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    mean: Tensor


def make_gaussian_classes(d: int = 100, n: int = 50, n_test: int = 1000, noise: float = 0.025, seed: int = 0,
                          dtype: torch.dtype = torch.float64) -> GaussianClasses:
    """Balanced classes ``x = +-mean + noise * N(0, I)``; train and test share the mean.

    >>> data = make_gaussian_classes(d=5, n=4, n_test=2)
    >>> tuple(data.x.shape), data.y.tolist().count(1), round(float(data.mean.norm()), 6)
    ((4, 5), 2, 1.0)
    """
    if n < 2 or n % 2 or n_test % 2:
        raise SharpnessError(f"n and n_test must be even (balanced classes), got n={n}, n_test={n_test}")
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=dtype)
    mean = mean / mean.norm()

    def sample(m: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(m).remainder(2)[torch.randperm(m, generator=g)]
        x = (2 * y - 1).to(dtype)[:, None] * mean + noise * torch.randn(m, d, generator=g, dtype=dtype)
        return x, y

    x, y = sample(n)
    x_test, y_test = sample(n_test)
    return GaussianClasses(x, y, x_test, y_test, mean)


def train(data: GaussianClasses, lr: float = 5.0, steps: int = 100, init_scale: float = 1 / 500,
          seed: int = 0) -> LinearClassifier:
    """Full-batch gradient descent on the mean logistic loss from ``w0 = init_scale * N(0, I)``."""
    g = torch.Generator().manual_seed(seed)
    d = data.x.shape[1]
    model = LinearClassifier(init_scale * torch.randn(d, generator=g, dtype=data.x.dtype))
    for _ in range(steps):
        loss = F.cross_entropy(model(data.x), data.y)
        (grad,) = torch.autograd.grad(loss, [model.weight])
        with torch.no_grad():
            model.weight.sub_(lr * grad)
    return model


# --------------------------------------------------------------- closed form
def margins(w: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``(2y - 1) <w, x>``: positive when the example is classified correctly."""
    return (2 * y - 1).to(x.dtype) * (x @ w.reshape(-1))


def margin_drop(w: Tensor, x: Tensor, rho: float, radius: Radius) -> Tensor:
    r"""Worst-case L2 margin drop of each example: :math:`\rho\|c \odot x\|_2`."""
    w = w.reshape(-1)
    if radius == "standard":
        c = torch.ones_like(w)
    elif radius == "elementwise":
        c = w.abs()
    elif radius == "norm":
        c = w.norm().expand_as(w)
    else:
        raise SharpnessError(f"unknown radius {radius!r}; expected one of {list(RADII)}")
    return rho * (c * x).norm(dim=1)


def logistic_loss(margin: Tensor, logit_norm: bool) -> Tensor:
    r""":math:`\log(1 + e^{-m})`; with logit normalisation the margin becomes :math:`\sqrt2\,\mathrm{sign}(m)`."""
    if logit_norm:
        margin = math.sqrt(2) * margin.sign()
    return F.softplus(-margin)


def worst_case_one_example(w: Tensor, x: Tensor, y: Tensor, rho: float, radius: Radius,
                           logit_norm: bool = False) -> Tensor:
    """m = 1 worst-case L2 sharpness of every example (its mean is the m = 1 value).

    >>> w = torch.tensor([1.0, 0.0]); x = torch.tensor([[2.0, 0.0]]); y = torch.tensor([1])
    >>> round(float(worst_case_one_example(w, x, y, 0.5, "standard")), 6)   # margin 2 -> 1
    0.186334
    """
    m = margins(w, x, y)
    drop = margin_drop(w, x, rho, radius)
    return logistic_loss(m - drop, logit_norm) - logistic_loss(m, logit_norm)


# ----------------------------------------------------------------- experiment
def sharpness_m_n(model: LinearClassifier, data: GaussianClasses, rho: float, radius: Radius, logit_norm: bool,
                  n_iters: int, n_starts: int, seed: int = 0) -> dict[str, Any]:
    """m = n worst case through :func:`~sharpness.measure`: the zero start and ``n_starts`` random starts."""
    base = Spec(case="worst", norm="l2", rho=rho, scaling=RADII[radius], logit_norm=logit_norm, n_iters=n_iters)
    batch = [(data.x, data.y)]
    zero = measure(model, batch, base).value
    starts = [measure(model, batch, base.replace(init="random", seed=seed + s)).value for s in range(n_starts)]
    return {"zero_start": zero, "random_starts": starts, "best": max([zero, *starts])}


def scan(config: LogisticConfig, data: GaussianClasses, model: LinearClassifier) -> list[dict[str, Any]]:
    """Sharpness of ``alpha * w`` for every alpha, radius and logit normalisation, m = 1 and m = n."""
    rows = []
    for alpha in config.alphas():
        scaled = model.scaled(alpha)
        w = scaled.weight.detach()
        clean = F.cross_entropy(scaled(data.x), data.y).item()
        for radius in RADII:
            for logit_norm in (False, True):
                m1 = worst_case_one_example(w, data.x, data.y, config.rho, radius, logit_norm).mean().item()
                mn = sharpness_m_n(scaled, data, config.rho, radius, logit_norm, config.n_iters, config.n_starts,
                                   config.seed)
                rows.append({"alpha": alpha, "radius": radius, "logit_norm": logit_norm, "train_loss": clean,
                             "m1": m1, "mn": mn})
    return rows


def check_m1(model: LinearClassifier, data: GaussianClasses, rho: float, alphas: list[float],
             n_examples: int = 8, n_iters: int = 30) -> float:
    """Largest relative gap between the m = 1 closed form and Auto-PGD on one-example batches.

    Auto-PGD's momentum approaches the boundary of the ball geometrically (a factor 1/4 every
    two iterations), so the gap shrinks like ``4 ** (-n_iters / 2)``; use alphas whose loss does
    not underflow in the cross-entropy (it returns exactly 0 below about 1e-16 in float64).
    """
    x, y = data.x[:n_examples], data.y[:n_examples]
    batches = [(x[i : i + 1], y[i : i + 1]) for i in range(len(y))]
    worst = 0.0
    for alpha in alphas:
        scaled = model.scaled(alpha)
        for radius, scaling in RADII.items():
            exact = worst_case_one_example(scaled.weight.detach(), x, y, rho, radius).mean().item()
            spec = Spec(case="worst", norm="l2", rho=rho, scaling=scaling, n_iters=n_iters)
            worst = max(worst, abs(measure(scaled, batches, spec).value - exact) / exact)
    return worst


def run(config: LogisticConfig) -> dict[str, Any]:
    """Data, training, the scan and the m = 1 check, as one JSON-ready dict."""
    data = make_gaussian_classes(config.d, config.n, config.n_test, config.noise, config.seed)
    model = train(data, config.lr, config.steps, seed=config.seed)
    w = model.weight.detach()
    test_error = (margins(w, data.x_test, data.y_test) <= 0).double().mean().item()
    return {
        "config": dict(config.__dict__),
        "logits": "(-z/2, z/2) with z = <w, x>; logit_norm maps the margin m to sqrt(2) sign(m)",
        "weight_norm": w.norm().item(),
        "train_loss": F.cross_entropy(model(data.x), data.y).item(),
        "test_error": test_error,
        "rows": scan(config, data, model),
        "checks": {"m1_closed_form_vs_measure": check_m1(model, data, config.rho, [2.0**-6, 1.0])},
    }


def plot(results: dict[str, Any], path: str) -> None:
    """Sharpness of alpha * w: one panel per (radius, logit normalisation); m = 1 line, m = n spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(len(RADII), 2, figsize=(10, 3.0 * len(RADII)), squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.95, bottom=0.08, wspace=0.25, hspace=0.3)
    for ax_row, radius in zip(axes, RADII):
        for ax, logit_norm in zip(ax_row, (False, True)):
            sel = [r for r in rows if r["radius"] == radius and r["logit_norm"] == logit_norm]
            alphas = [r["alpha"] for r in sel]
            starts = [r["mn"]["random_starts"] for r in sel]
            ax.plot(alphas, [r["m1"] for r in sel], "o-", ms=3, label="m = 1 (closed form)")
            ax.plot(alphas, [r["mn"]["best"] for r in sel], "s-", ms=3, label="m = n (Auto-PGD, best)")
            ax.fill_between(alphas, [min(s) for s in starts], [max(s) for s in starts], alpha=0.3,
                            label="m = n, random starts (min-max)")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{radius} radius, logit_norm={logit_norm}", fontsize=10)
            ax.set_ylabel("sharpness")
    for ax in axes[-1]:
        ax.set_xlabel("alpha (classifier alpha * w)")
    axes[0][0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
