r"""Networks of the model zoos, in plain torch (:data:`ARCHS`).

A card's ``arch`` is ``{"name": ..., "kwargs": {...}}``; :func:`sharpness.zoo.archs.build` turns it back
into the network. Image and signal models take raw inputs (images in [0, 1]) and
start with a :class:`Normalize` module whose statistics are buffers, so a
checkpoint is self-contained and input corruptions act on raw data.

Every constructor takes ``in_shape`` (one example's shape, without the batch
dimension) and ``n_classes``; :func:`sharpness.zoo.archs.complete_arch` fills them in from a dataset.

>>> from sharpness.zoo.archs import build
>>> net = build({"name": "mlp", "kwargs": {"in_shape": [1, 40], "n_classes": 10, "hidden": [32],
...                                          "mean": [0.0], "std": [2.0]}})
>>> net(torch.ones(5, 1, 40)).shape
torch.Size([5, 10])
>>> n_params(net)  # (40 + 1) * 32 + (32 + 1) * 10
1642
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sharpness.errors import SharpnessError

Shape = Sequence[int]


class Normalize(nn.Module):
    r"""Per-channel standardisation :math:`(x - \mu_c) / \sigma_c` of ``(N, C, ...)`` inputs.

    >>> Normalize([1.0, 2.0], [2.0, 4.0])(torch.tensor([[[3.0], [6.0]]]))
    tensor([[[1.],
             [1.]]])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise SharpnessError(f"Normalize needs one positive std per mean, got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs."""

    def __init__(self, in_shape: Shape, n_classes: int, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _flat_size(features: nn.Module, in_shape: Shape) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, *in_shape)).numel()


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (conv, optional BatchNorm, ReLU, 2x2 max-pool), then two linear layers."""

    def __init__(self, in_shape: Shape, n_classes: int, width: int = 32, hidden: int = 128,
                 batchnorm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_shape[0]
        for out in (width, 2 * width):
            blocks += [nn.Conv2d(channels, out, 3, padding=1, bias=not batchnorm)]
            blocks += [nn.BatchNorm2d(out)] if batchnorm else []
            blocks += [nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(_flat_size(self.features, in_shape), hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNN1D(nn.Module):
    """1-D CNN for MNIST-1D: ``depth`` stride-2 convolutions (kernel 5) with ReLU, then a linear layer."""

    def __init__(self, in_shape: Shape, n_classes: int, width: int = 32, depth: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_shape[0]
        for _ in range(depth):
            blocks += [nn.Conv1d(channels, width, 5, stride=2, padding=2), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*blocks, nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(_flat_size(self.features, in_shape), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): BN-ReLU-conv twice, identity or 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for small images; stage widths ``width * (1, 2, 4, 8)`` (11.2 M parameters at 64)."""

    def __init__(self, in_shape: Shape, n_classes: int, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c_in = width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2**i
            blocks += [PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.linear = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.linear(out.mean(dim=(2, 3)))


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, ``(h * w, dim)`` (``dim`` divisible by 4)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1 if dim > 4 else 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per example with probability ``p`` (scaled by 1/(1-p))."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)


class Attention(nn.Module):
    """Multi-head self-attention with ``heads`` heads of size ``dim / heads``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise SharpnessError(f"SimpleViT: dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + drop(attn(LN x))``, then ``x + drop(mlp(LN x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SimpleViT(nn.Module):
    """SimpleViT (Beyer et al. 2022): patch embedding, fixed sin-cos positions, mean pooling.

    Stochastic depth grows linearly from 0 at the first block to ``drop_path`` at the last.
    At ``patch=4, dim=512, depth=6, heads=16, mlp_dim=1024`` on 32x32x3 images it has 12.6 M parameters.
    """

    pos: torch.Tensor

    def __init__(self, in_shape: Shape, n_classes: int, patch: int = 4, dim: int = 192, depth: int = 6,
                 heads: int = 3, mlp_dim: int = 384, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        c, h, w = in_shape
        if h % patch or w % patch:
            raise SharpnessError(f"SimpleViT: image size {h}x{w} is not divisible by patch={patch}")
        self.patch = patch
        patch_dim = c * patch * patch
        self.embed = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.register_buffer("pos", sincos_2d(h // patch, w // patch, dim), persistent=False)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_dim, dropout, r) for r in rates])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.patch
        patches = x.view(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)
        tokens = self.embed(patches) + self.pos.to(x.dtype)
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "cnn1d": CNN1D,
    "preact_resnet18": PreActResNet18,
    "simple_vit": SimpleViT,
}


def n_params(model: nn.Module) -> int:
    """Number of trainable parameter elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
