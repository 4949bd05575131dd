"""Distribution shifts for out-of-distribution errors: corruptions with five severities.

Image shifts follow CIFAR-10-C (Hendrycks & Dietterich, 2019) and use its severity
parameters ``s``; the blur width is given for 32 pixels and scaled by ``H / 32``, so
28x28 Fashion-MNIST gets proportionally the same blur. Each acts on a batch ``x`` of
shape ``(N, C, H, W)`` in ``[0, 1]`` and returns one in ``[0, 1]``:

==================  ==========================================================================
``gaussian_noise``  ``clip(x + s z)``, ``z ~ N(0, 1)``
``shot_noise``      ``clip(Poisson(s x) / s)``: photon noise, stronger for smaller ``s``
``impulse_noise``   a fraction ``s`` of the values is set to 0 or 1 (salt and pepper)
``gaussian_blur``   convolution with a Gaussian of width ``s H / 32`` pixels (edges replicated)
``contrast``        ``m + s (x - m)``, ``m`` the mean of each channel of each image
``brightness``      HSV value ``V = max_c x_c`` raised to ``min(V + s, 1)``, hue and saturation kept
``pixelate``        area-downsample to ``floor(s H) x floor(s W)`` and area-upsample back
``jpeg``            JPEG round trip through Pillow at quality ``s``
``rotate``          rotation by ``± s`` degrees about the centre (sign drawn per image), zero fill
==================  ==========================================================================

Pixelation uses CIFAR-10-C's resolution factors with 0.9 replaced by 0.5: between factors
that close (blocks of 1.05 to 1.2 pixels) the distance to the clean image depends more on
how the blocks meet the pixel grid than on their size, and stops growing with the
severity. CIFAR-10-C has no rotation; its angles (6 to 30 degrees) are ours, as are the
levels of the signal and text shifts.

Signal shifts (MNIST-1D, ``(N, C, L)``, standardised values, not clipped): ``signal_noise``
adds ``s z``; ``translate`` shifts by ``± s`` samples and ``scale`` stretches the time
axis about its centre by ``s`` or ``1 / s`` (direction drawn per example), both
replicating the edge values. Text shifts act on lists of strings: ``segment`` keeps the
later part of each article (from the word at fraction ``s``), ``char_noise`` and
``word_noise`` edit a fraction ``s`` of the characters or words (substitute, insert,
delete, swap with the next; new words come from the same article, and words are then
joined by single spaces).

Every shift is a pure function of ``(x, severity, seed)``: random draws come from
generators seeded by ``seed`` (on the CPU, so a GPU batch gets the same corruption),
and the draws do not depend on the severity, so a higher severity corrupts a superset
of the elements (and the Gaussian noises scale the same ``z``). Apply a shift to a
whole split at once: batches shifted separately with one seed share their noise.
"""

from __future__ import annotations

import io
import math
import numbers
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from sharpness.errors import SharpnessError
from sharpness.zoo.datasets import Modality

# --------------------------------------------------------------------------- images


def _noise(x: torch.Tensor, g: torch.Generator, kind: str = "normal") -> torch.Tensor:
    """Draws of x's shape on the CPU (device-independent streams), moved to x's device and dtype."""
    draw = torch.randn if kind == "normal" else torch.rand
    return draw(x.shape, generator=g, dtype=torch.float64).to(x)


def _gaussian_noise(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return (x + sigma * _noise(x, g)).clamp(0, 1)


def _shot_noise(x: torch.Tensor, rate: float, g: torch.Generator) -> torch.Tensor:
    counts = torch.poisson(x.detach().cpu().double() * rate, generator=g)
    return (counts / rate).to(x).clamp(0, 1)


def _impulse_noise(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    hit, salt = _noise(x, g, "uniform"), _noise(x, g, "uniform") < 0.5
    return torch.where(hit < amount, salt.to(x.dtype), x)


def _gaussian_blur(x: torch.Tensor, sigma32: float, g: torch.Generator) -> torch.Tensor:
    """Separable Gaussian filter truncated at 4 sigma, as scipy/skimage do."""
    sigma = sigma32 * x.shape[-2] / 32
    radius = math.ceil(4 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(x.shape[1], 1, 1, 1)  # (C, 1, 1, K): one kernel per channel
    y = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k, groups=x.shape[1])
    return F.conv2d(y, k.transpose(2, 3), groups=x.shape[1]).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    m = x.mean(dim=(2, 3), keepdim=True)
    return (m + factor * (x - m)).clamp(0, 1)


def _brightness(x: torch.Tensor, shift: float, g: torch.Generator) -> torch.Tensor:
    """Add to the HSV value V = max over channels; with H and S fixed, RGB scales with V (black turns grey)."""
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + shift).clamp(max=1)
    return torch.where(v > 0, x * (v_new / v.clamp(min=1e-12)), v_new).clamp(0, 1)


def _area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Area resampling along one axis: output pixel i averages the input over its footprint [i s, (i + 1) s)."""
    s = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64)[:, None] * s
    j = torch.arange(n_in, dtype=torch.float64)[None]
    return (torch.minimum(lo + s, j + 1) - torch.maximum(lo, j)).clamp(min=0) / s


def _pixelate(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    """Area-downsample to floor(factor H) x floor(factor W), area-upsample back (both exact, linear in x)."""
    h, w = x.shape[-2:]
    sh, sw = max(1, int(h * factor)), max(1, int(w * factor))
    rows = (_area_matrix(sh, h) @ _area_matrix(h, sh)).to(x)
    cols = (_area_matrix(sw, w) @ _area_matrix(w, sw)).to(x)
    return torch.einsum("ij,ncjk,lk->ncil", rows, x, cols).clamp(0, 1)


def _jpeg(x: torch.Tensor, quality: float, g: torch.Generator) -> torch.Tensor:
    from PIL import Image

    if x.shape[1] not in (1, 3):
        raise SharpnessError(f"jpeg needs 1 or 3 channels, got {x.shape[1]}")
    pixels = (x.detach().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(pixels)
    for i, img in enumerate(pixels):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=int(quality))
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return (torch.from_numpy(out).permute(0, 3, 1, 2) / 255).to(x)


def _rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Bilinear rotation about the image centre; ``affine_grid`` works in [-1, 1] coordinates,
    so the off-diagonal terms carry the aspect ratio."""
    n, _, h, w = x.shape
    sign = torch.randint(0, 2, (n,), generator=g).to(x) * 2 - 1
    a = sign * math.radians(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------- signals


def _resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of (N, C, L) signals at positions (N, L), clamped to the ends."""
    pos = pos.clamp(0, x.shape[-1] - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=x.shape[-1] - 1)
    w = (pos - i0).unsqueeze(1).to(x.dtype)
    idx0, idx1 = (i.unsqueeze(1).expand(-1, x.shape[1], -1) for i in (i0, i1))
    return (1 - w) * x.gather(-1, idx0) + w * x.gather(-1, idx1)


def _signs(n: int, g: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, (n,), generator=g) * 2 - 1).double()


def _signal_noise(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    return x + sigma * _noise(x, g)


def _translate(x: torch.Tensor, samples: float, g: torch.Generator) -> torch.Tensor:
    t = torch.arange(x.shape[-1], dtype=torch.float64)
    pos = t[None] - samples * _signs(len(x), g)[:, None]
    return _resample(x, pos.to(x.device))


def _scale(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    centre = (x.shape[-1] - 1) / 2
    t = torch.arange(x.shape[-1], dtype=torch.float64) - centre
    f = factor ** _signs(len(x), g)  # factor or 1 / factor
    return _resample(x, (centre + t[None] / f[:, None]).to(x.device))


# --------------------------------------------------------------------------- text

def _segment(texts: list[str], fraction: float, rng: np.random.Generator) -> list[str]:
    """Each text from the word at ``floor(fraction * n_words)`` on (the last word at least)."""
    out = []
    for text in texts:
        starts = [m.start() for m in re.finditer(r"\S+", text)]
        out.append(text[starts[min(int(fraction * len(starts)), len(starts) - 1)] :] if starts else text)
    return out


def _edit(units: list[str], pool: Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Edit each unit with probability p: substitute or insert a unit drawn from ``pool``, delete, or swap
    with the next one. Edits run right to left, so earlier indices stay valid."""
    n = len(units)
    hit, op, pick = rng.random(n), rng.integers(4, size=n), rng.integers(max(len(pool), 1), size=n)
    out = list(units)
    for i in np.flatnonzero(hit < p)[::-1]:
        if op[i] == 0:
            out[i] = pool[pick[i]]
        elif op[i] == 1:
            out.insert(i, pool[pick[i]])
        elif op[i] == 2:
            del out[i]
        elif i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _char_noise(texts: list[str], p: float, rng: np.random.Generator) -> list[str]:
    return ["".join(_edit(list(text), string.ascii_lowercase, p, rng)) for text in texts]


def _word_noise(texts: list[str], p: float, rng: np.random.Generator) -> list[str]:
    """Replacements and insertions come from the article's own words."""
    return [" ".join(_edit(text.split(), text.split(), p, rng)) for text in texts]


# --------------------------------------------------------------------------- registry


class ShiftInfo(NamedTuple):
    """What a shift acts on and what it does (with its five severity parameters)."""

    modality: Modality
    description: str


@dataclass(frozen=True)
class _Shift:
    modality: Modality
    levels: tuple[float, ...]
    fn: Callable[[Any, float, Any], Any]
    what: str


_TABLE: dict[str, _Shift] = {
    "gaussian_noise": _Shift("image", (0.04, 0.06, 0.08, 0.09, 0.10), _gaussian_noise, "Gaussian noise, sigma"),
    "shot_noise": _Shift("image", (500, 250, 100, 75, 50), _shot_noise, "Poisson noise, photons per unit"),
    "impulse_noise": _Shift("image", (0.01, 0.02, 0.03, 0.05, 0.07), _impulse_noise, "salt and pepper, fraction"),
    "gaussian_blur": _Shift("image", (0.4, 0.6, 0.7, 0.8, 1.0), _gaussian_blur, "Gaussian blur, sigma (32 px)"),
    "contrast": _Shift("image", (0.75, 0.5, 0.4, 0.3, 0.15), _contrast, "contrast reduction, factor"),
    "brightness": _Shift("image", (0.05, 0.1, 0.15, 0.2, 0.3), _brightness, "brightness (HSV value), increase"),
    "pixelate": _Shift("image", (0.95, 0.85, 0.75, 0.65, 0.5), _pixelate, "pixelation, resolution factor"),
    "jpeg": _Shift("image", (80, 65, 58, 50, 40), _jpeg, "JPEG compression, quality"),
    "rotate": _Shift("image", (6, 12, 18, 24, 30), _rotate, "rotation by +-degrees"),
    "signal_noise": _Shift("signal", (0.1, 0.2, 0.3, 0.4, 0.5), _signal_noise, "additive Gaussian noise, sigma"),
    "translate": _Shift("signal", (2, 4, 6, 8, 10), _translate, "translation by +-samples, edges replicated"),
    "scale": _Shift("signal", (1.1, 1.2, 1.3, 1.4, 1.5), _scale, "time-axis stretch by factor or 1/factor"),
    "segment": _Shift("text", (0.2, 0.35, 0.5, 0.65, 0.8), _segment, "later part of each text, from word fraction"),
    "char_noise": _Shift("text", (0.02, 0.04, 0.06, 0.08, 0.1), _char_noise, "character edits, fraction"),
    "word_noise": _Shift("text", (0.05, 0.1, 0.15, 0.2, 0.25), _word_noise, "word edits, fraction"),
}

SHIFTS: dict[str, ShiftInfo] = {
    name: ShiftInfo(s.modality, f"{s.what} = {', '.join(f'{v:g}' for v in s.levels)} at severities 1-5")
    for name, s in _TABLE.items()
}
"""The registry: shift name -> :class:`ShiftInfo`."""


def shifts_for(modality: str) -> list[str]:
    """The default shifts of a modality (all registered ones).

    >>> shifts_for("signal")
    ['signal_noise', 'translate', 'scale']
    """
    names = [name for name, info in SHIFTS.items() if info.modality == modality]
    if not names:
        raise SharpnessError(f"unknown modality {modality!r}; known: image, signal, text")
    return names


def apply(shift: str, x: Any, severity: int = 5, seed: int = 0) -> Any:
    """Corrupt ``x`` with ``shift`` at ``severity`` (1 mild ... 5 strong), deterministically for ``seed``.

    Args:
        shift: a key of :data:`SHIFTS`.
        x: images ``(N, C, H, W)`` in ``[0, 1]``, signals ``(N, C, L)`` (float tensors, any
            device), or a list of strings; never modified.
        severity: 1..5.
        seed: seed of the random draws.

    Returns:
        A new tensor of ``x``'s shape, dtype and device, or a new list of strings.

    >>> x = torch.full((1, 1, 4, 4), 0.5)
    >>> apply("brightness", x, severity=5)[0, 0, 0, 0].item()
    0.800000011920929
    >>> apply("segment", ["one two three four five"], severity=3)
    ['three four five']
    """
    if shift not in _TABLE:
        raise SharpnessError(f"unknown shift {shift!r}; known: {', '.join(SHIFTS)}")
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or not 1 <= severity <= 5:
        raise SharpnessError(f"severity must be an integer in 1..5, got {severity!r}")
    s = _TABLE[shift]
    level = s.levels[int(severity) - 1]
    if s.modality == "text":
        return s.fn(_check_texts(shift, x), level, np.random.default_rng(seed))
    _check_tensor(shift, x, 4 if s.modality == "image" else 3)
    with torch.no_grad():
        return s.fn(x, level, torch.Generator().manual_seed(seed))


def _check_tensor(shift: str, x: Any, ndim: int) -> None:
    layout = "(N, C, H, W)" if ndim == 4 else "(N, C, L)"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != ndim:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise SharpnessError(f"shift {shift!r} needs a float tensor {layout}, got {got}")


def _check_texts(shift: str, x: Any) -> list[str]:
    if isinstance(x, str) or not isinstance(x, Sequence) or not all(isinstance(t, str) for t in x):
        raise SharpnessError(f"shift {shift!r} needs a list of strings, got {type(x).__name__}")
    return list(x)
