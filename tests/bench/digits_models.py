"""Small networks trained for a few epochs on scikit-learn's 8x8 digits (shipped with scikit-learn)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from sharpness.zoo.models import SimpleViT, SmallCNN

Data = tuple[torch.Tensor, torch.Tensor]


@functools.cache
def digits() -> Data:
    """All 1797 images as ``(N, 1, 8, 8)`` floats in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target, dtype=torch.long)


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "cnn":
        return SmallCNN((1, 8, 8), 10, width=8, hidden=32, batchnorm=True)
    if name == "vit":
        return SimpleViT((1, 8, 8), 10, patch=2, dim=32, depth=2, heads=4, mlp_dim=64)
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    raise ValueError(name)


@functools.cache
def trained(name: str, epochs: int = 4) -> nn.Module:
    """``name`` trained with Adam on the first 1500 digits (seeded); returned in eval mode."""
    model = build(name)
    x, y = digits()
    x, y = x[:1500], y[:1500]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def mbatches(n: int = 2, m: int = 64) -> list[Data]:
    """``n`` m-batches of training examples."""
    x, y = digits()
    return [(x[i * m:(i + 1) * m], y[i * m:(i + 1) * m]) for i in range(n)]
