"""What the released code's adaptive L2 ascent does when a weight is exactly zero, next to ``measure``.

The released code steps in ``delta`` (``delta += eta * |w| * g / ||g||``) and projects onto the ellipsoid
``||delta / |w| ||_2 <= rho`` only when that weighted norm exceeds ``rho``. With any weight exactly zero
(BatchNorm biases at initialisation, pruned weights) the weighted norm is ``0/0 = NaN``, the comparison is
false and the projection is skipped: the perturbation leaves the ball. This script re-implements that
update rule in a few lines (from its description, not its code) on a freshly initialised CNN with
BatchNorm and reports the relative radius it reaches and the value it reports, next to ``measure``.

    python benchmarks/released_comparison.py
"""

from __future__ import annotations

import torch
from torch import nn

from sharpness import Spec, measure


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def released_style_l2_adaptive(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rho: float,
                               n_iters: int) -> tuple[float, float]:
    """Loss increase and relative radius ||delta/|w|||_2 / rho (over w != 0) of the skipped-projection ascent."""
    params = list(model.parameters())
    w0 = [p.detach().clone() for p in params]
    delta = [torch.zeros_like(p) for p in params]
    prev = [d.clone() for d in delta]
    with torch.no_grad():
        clean = float(nn.functional.cross_entropy(model(x), y))
    step = 2 * rho
    for _ in range(n_iters):
        loss = nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params)
        gnorm = torch.sqrt(sum((g**2).sum() for g in grads))
        backup = [d.clone() for d in delta]
        with torch.no_grad():
            delta = [d + step * g * w.abs() / (gnorm + 1e-12) for d, g, w in zip(delta, grads, w0)]
            weighted = torch.sqrt(sum(((d / w.abs()) ** 2).sum() for d, w in zip(delta, w0)))
            if weighted > rho:  # NaN when some w == 0: the projection is skipped
                delta = [d * rho / weighted for d in delta]  # (stands in for the bisection)
            delta = [0.75 * d + 0.25 * q for d, q in zip(delta, prev)]
            prev = backup
            for p, w, d in zip(params, w0, delta):
                p.copy_(w + d)
    with torch.no_grad():
        value = float(nn.functional.cross_entropy(model(x), y)) - clean
        radius = torch.sqrt(sum(((d / w.abs())[w != 0] ** 2).sum() for d, w in zip(delta, w0)))
        for p, w in zip(params, w0):
            p.copy_(w)
    return value, float(radius) / rho


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    rho, n_iters = 0.5, 8
    model = cnn()
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    value, rel = released_style_l2_adaptive(model, x, y, rho, n_iters)
    res = measure(model, [(x, y)], Spec(case="worst", norm="l2", rho=rho, n_iters=n_iters))
    print(f"fresh CNN with BatchNorm: {zeros} weights exactly 0, rho={rho}, {n_iters} iterations")
    print(f"  released-style update : value {value:.4f}, relative radius {rel:.2f}  (feasible needs <= 1)")
    print(f"  sharpness.measure     : value {res.value:.4f}, relative radius {res.radius / rho:.2f}")


if __name__ == "__main__":
    main()
