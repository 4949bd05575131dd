"""Small models with known answers and restoration checks, shared by the tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn


def needs_system_part(path: Path, what: str, package: str) -> pytest.MarkDecorator:
    """Skip unless ``path`` exists; the reason names the Debian package that provides it (one rule for all)."""
    return pytest.mark.skipif(not path.exists(),
                              reason=f"{what} not installed ({path} missing): apt-get install {package}")


def _fashion_file() -> Path:
    from sharpness.zoo.datasets import FASHION_MNIST_ROOT

    return FASHION_MNIST_ROOT / "t10k-images-idx3-ubyte.gz"


needs_fashion_mnist = needs_system_part(_fashion_file(), "Fashion-MNIST", "dataset-fashion-mnist")
needs_chromium = needs_system_part(Path("/usr/bin/chromium"), "headless Chromium", "chromium")


class Quadratic(nn.Module):
    """Loss ``0.5 (w - w*)^T A (w - w*)`` returned per example; use with ``mean_loss``."""

    def __init__(self, a: torch.Tensor, w_star: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w_star.clone())
        self.register_buffer("a", a)
        self.register_buffer("w_star", w_star.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.w - self.w_star
        return (0.5 * d @ self.a @ d).expand(x.shape[0])


def mean_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.mean()


def random_psd(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(n, n, generator=g, dtype=dtype)
    return b @ b.T / n + 0.1 * torch.eye(n, dtype=dtype)


class TwoLogit(nn.Module):
    """Binary logistic regression written as logits ``[0, w.x]``."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.w
        return torch.stack([torch.zeros_like(z), z], dim=1)


def mlp(d_in: int = 10, width: int = 16, k: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64,
        bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, width, bias=bias), nn.ReLU(), nn.Linear(width, k, bias=bias)).to(dtype)


def classification_data(n: int = 64, d_in: int = 10, k: int = 3, seed: int = 0,
                        dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=dtype)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


class KeywordModel(nn.Module):
    """Hugging Face style: keyword inputs, output object with ``.logits``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.net(input_ids * attention_mask))


class SmallCNN(nn.Module):
    """Conv + BatchNorm + dropout: exercises eval mode and buffers."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 6 * 6, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.head(h.flatten(1))


def snapshot(model: nn.Module) -> dict:
    """Everything of a model that measure() must give back, and the global RNG state."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {n: None if p.grad is None else (id(p.grad), p.grad.clone()) for n, p in model.named_parameters()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "rng": torch.get_rng_state(),
    }


def assert_restored(model: nn.Module, before: dict) -> None:
    """Bit-for-bit equality with a :func:`snapshot`, including the identity of each .grad tensor."""
    after = snapshot(model)
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
        assert after["state"][k].dtype == v.dtype
    for n, g in before["grads"].items():
        if g is None:
            assert after["grads"][n] is None
        else:
            assert after["grads"][n][0] == g[0] and torch.equal(after["grads"][n][1], g[1])
    assert after["flags"] == before["flags"]
    assert after["modes"] == before["modes"]
    assert torch.equal(after["rng"], before["rng"])
