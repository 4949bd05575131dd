r"""Data augmentation on batches of tensors, in plain torch (no torchvision).

Four levels, each a recipe (images ``(N, C, H, W)`` in [0, 1]; signals ``(N, C, L)``):

========  ================  ====================================  =============
level     crop (and flip)   RandAugment-style ops per example      mixup alpha
========  ================  ====================================  =============
none      --                --                                     0
light     yes               --                                     0
medium    yes               2 ops at magnitude 0.33                0.2
strong    yes               2 ops at magnitude 0.5                 0.5
========  ================  ====================================  =============

Crop: pad by 1/8 of the size with zeros and cut a random window (translation);
images are also flipped horizontally with probability 1/2. The op sets
(magnitude ``m`` in [0, 1], random sign ``s``):

* images: identity, brightness ``x(1 + 0.9 s m)``, contrast, solarize above ``1 - m``,
  posterize to ``8 - 4m`` bits, autocontrast, sharpness, rotation by ``30 s m`` degrees,
  shear and translation (``0.3 s m``) along x and y;
* signals: identity, amplitude scale ``1 + 0.5 s m``, offset ``0.5 s m``, Gaussian noise of
  std ``0.5 m``, time stretch ``1 + 0.3 s m``.

Every op is applied to the whole batch and selected per example with ``torch.where``,
so there is no host synchronisation, and all draws come from the generator passed in.

>>> g = torch.Generator().manual_seed(0)
>>> x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
>>> y = augment(x, "strong", g)
>>> y.shape, bool(((y >= 0) & (y <= 1)).all())
(torch.Size([4, 1, 8, 8]), True)
>>> torch.equal(augment(x, "none", g), x)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from sharpness.errors import SharpnessError

Level = Literal["none", "light", "medium", "strong"]
Op = Callable[[torch.Tensor, torch.Tensor, float, torch.Generator], torch.Tensor]  # (x, signs (N,), magnitude, rng)


@dataclass(frozen=True)
class Recipe:
    """What one augmentation level does."""

    crop: bool
    n_ops: int
    magnitude: float
    mixup: float


RECIPES: dict[str, Recipe] = {
    "none": Recipe(crop=False, n_ops=0, magnitude=0.0, mixup=0.0),
    "light": Recipe(crop=True, n_ops=0, magnitude=0.0, mixup=0.0),
    "medium": Recipe(crop=True, n_ops=2, magnitude=1 / 3, mixup=0.2),
    "strong": Recipe(crop=True, n_ops=2, magnitude=0.5, mixup=0.5),
}


def recipe(level: str) -> Recipe:
    if level not in get_args(Level):
        raise SharpnessError(f"augment must be one of {list(get_args(Level))}, got {level!r}")
    return RECIPES[level]


def _per_example(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.view((-1,) + (1,) * (x.dim() - 1))


def random_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Pad the spatial dimensions by ``size // 8`` with zeros and cut a random window per example."""
    n = x.shape[0]
    sizes = x.shape[2:]
    pads = [max(s // 8, 1) for s in sizes]
    padded = F.pad(x, [p for p in reversed(pads) for _ in range(2)])
    rows = torch.arange(n, device=x.device).view((n,) + (1,) * len(sizes))
    spatial: list[torch.Tensor] = []  # one index tensor per spatial dim, broadcast to (N, *sizes)
    for d, (size, pad) in enumerate(zip(sizes, pads)):
        offset = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=g.device).to(x.device)
        idx = offset[:, None] + torch.arange(size, device=x.device)[None, :]
        shape = [n] + [1] * len(sizes)
        shape[1 + d] = size
        spatial.append(idx.view(shape))
    channels = [padded[(rows, torch.tensor(c, device=x.device), *spatial)] for c in range(x.shape[1])]
    return torch.stack(channels, dim=1)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each image with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=g, device=g.device).to(x.device) < 0.5
    return torch.where(_per_example(flip, x), x.flip(-1), x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def _eye(x: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(x.shape[0], 2, 3).clone()


def _rotate(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    a = s * math.radians(30 * m)
    theta = _eye(x)
    theta[:, 0, 0], theta[:, 0, 1] = a.cos(), -a.sin()
    theta[:, 1, 0], theta[:, 1, 1] = a.sin(), a.cos()
    return _affine(x, theta)


def _shear(axis: int) -> Op:
    def op(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
        theta = _eye(x)
        theta[:, axis, 1 - axis] = 0.3 * m * s
        return _affine(x, theta)
    return op


def _translate(axis: int) -> Op:
    def op(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
        theta = _eye(x)
        theta[:, axis, 2] = 2 * 0.3 * m * s  # grid coordinates span 2
        return _affine(x, theta)
    return op


def _brightness(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    return x * (1 + 0.9 * m * _per_example(s, x))


def _contrast(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * (1 + 0.9 * m * _per_example(s, x))


def _solarize(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    return torch.where(x >= 1 - m, 1 - x, x)


def _posterize(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    levels = 2 ** (8 - round(4 * m))
    return torch.floor(x * (levels - 1) + 0.5) / (levels - 1)


def _autocontrast(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def _sharpness(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    blurred = F.avg_pool2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), 3, stride=1)
    return x + 0.9 * m * _per_example(s, x) * (x - blurred)


def _identity(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    return x


IMAGE_OPS: dict[str, Op] = {
    "identity": _identity, "brightness": _brightness, "contrast": _contrast, "solarize": _solarize,
    "posterize": _posterize, "autocontrast": _autocontrast, "sharpness": _sharpness, "rotate": _rotate,
    "shear_x": _shear(0), "shear_y": _shear(1), "translate_x": _translate(0), "translate_y": _translate(1),
}


def _scale(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    return x * (1 + 0.5 * m * _per_example(s, x))


def _offset(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    return x + 0.5 * m * _per_example(s, x)


def _stretch(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    n, _, length = x.shape
    pos = torch.linspace(-1, 1, length, device=x.device, dtype=x.dtype)
    factor = (1 + 0.3 * m * s).to(x.dtype)
    grid_x = (pos[None, :] / factor[:, None]).view(n, 1, length, 1)
    grid = torch.cat((grid_x, torch.zeros_like(grid_x)), dim=-1)
    return F.grid_sample(x.unsqueeze(2), grid, align_corners=True).squeeze(2)


def _noise(x: torch.Tensor, s: torch.Tensor, m: float, g: torch.Generator) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=g, device=g.device).to(x) * 0.5 * m


SIGNAL_OPS: dict[str, Op] = {"identity": _identity, "scale": _scale, "offset": _offset, "noise": _noise,
                             "stretch": _stretch}


def rand_augment(x: torch.Tensor, n_ops: int, magnitude: float, g: torch.Generator) -> torch.Tensor:
    """Apply ``n_ops`` ops drawn uniformly per example, each with a random sign, at ``magnitude``."""
    image = x.dim() == 4
    ops = list((IMAGE_OPS if image else SIGNAL_OPS).values())
    n = x.shape[0]
    for _ in range(n_ops):
        choice = torch.randint(0, len(ops), (n,), generator=g, device=g.device).to(x.device)
        signs = (torch.randint(0, 2, (n,), generator=g, device=g.device) * 2 - 1).to(x)
        out = x
        for k, op in enumerate(ops):
            out = torch.where(_per_example(choice == k, x), op(x, signs, magnitude, g), out)
        x = out.clamp(0, 1) if image else out
    return x


def augment(x: torch.Tensor, level: str, g: torch.Generator) -> torch.Tensor:
    """Augment a batch of images ``(N, C, H, W)`` or signals ``(N, C, L)`` at ``level`` (mixup excluded)."""
    r = recipe(level)
    if x.dim() not in (3, 4):
        raise SharpnessError(f"augmentation needs (N, C, L) signals or (N, C, H, W) images, got {tuple(x.shape)}")
    if r.crop:
        x = random_crop(x, g)
        if x.dim() == 4:
            x = random_flip(x, g)
    if r.n_ops:
        x = rand_augment(x, r.n_ops, r.magnitude, g)
    return x


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, lam: float, g: torch.Generator) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    r"""Mix each example with a random partner: :math:`\lambda x + (1 - \lambda) x_\pi`, same for soft labels ``y``."""
    if alpha <= 0:
        return x, y
    perm = torch.randperm(x.shape[0], generator=g, device=g.device).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]
