r"""Noise addressed by coordinate: each number a pure function of a 64-bit key, a row and a column.

A sequential generator (torch's Mersenne Twister on the CPU) gives the :math:`k`-th number only after the
:math:`k - 1` before it, so a draw restricted to some rows of an embedding could not give those rows the
numbers the whole draw gives them. Here the number at row :math:`r`, column :math:`j` of a piece keyed
:math:`k` is computed from :math:`(k, r, j)` alone, by two rounds of the SplitMix64 finaliser (Steele, Lea
and Flood 2014: a bijection of 64-bit words whose outputs over consecutive inputs pass BigCrush):

.. math:: h_r = \mathrm{mix}(k + r\,\gamma), \qquad z_{rj} = \mathrm{mix}(h_r + j\,\gamma),

with :math:`\gamma` the golden-ratio increment. The high and low 32 bits of :math:`z` give two uniforms;
a Gaussian is their Box–Muller transform in float64 (tails to :math:`6.6\sigma`), a uniform on
:math:`[0, 1)` the high 24 bits, as ``torch.rand`` gives in float32. Keys are 64-bit: torch's CPU generator
keeps only 32 bits of a seed, too few for one key per embedding row and draw (collisions would repeat
noise).

The arithmetic is plain int64 tensor arithmetic (multiplication wraps modulo :math:`2^{64}`; right shifts
are made logical by a mask), so it gives the same bits on any device. It matches the scalar reference:

>>> import torch
>>> z = mix(torch.tensor([1, 2], dtype=torch.int64))
>>> [to_unsigned(int(v)) for v in z] == [mix_int(1), mix_int(2)]
True
"""

from __future__ import annotations

import math

import torch

GAMMA = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1
# Rows hashed at once: bounds the int64 temporaries of a whole vocabulary to tens of MiB.
CHUNK_ELEMENTS = 1 << 20


def to_signed(x: int) -> int:
    """A 64-bit word as the int64 holding the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


def to_unsigned(x: int) -> int:
    """An int64 as the 64-bit word of the same bits."""
    return x & _MASK64


def mix_int(x: int) -> int:
    """The SplitMix64 finaliser of a 64-bit word (the scalar reference of :func:`mix`)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def key_of(*parts: int) -> int:
    """One 64-bit key from several integers (a key and sub-indices), by chaining the finaliser.

    >>> key_of(7, 0) != key_of(7, 1) != key_of(8, 0)
    True
    """
    k = 0
    for part in parts:
        k = mix_int((k ^ (part & _MASK64)) + GAMMA)
    return k


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 words (torch shifts arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser of each int64 word, in place."""
    x ^= _shift(x, 30)
    x *= to_signed(_M1)
    x ^= _shift(x, 27)
    x *= to_signed(_M2)
    x ^= _shift(x, 31)
    return x


def words(key: int, rows: torch.Tensor, width: int) -> torch.Tensor:
    """The words :math:`z_{rj}` of ``rows`` (int64 ids) and columns ``0..width-1``, shape ``(len(rows), width)``."""
    h = mix(rows.to(torch.int64) * to_signed(GAMMA) + to_signed(key))
    cols = torch.arange(width, dtype=torch.int64, device=rows.device) * to_signed(GAMMA)
    return mix(h.unsqueeze(1) + cols)


def fill(out: torch.Tensor, key: int, rows: torch.Tensor, kind: str) -> torch.Tensor:
    """Write into ``out`` (shape ``(len(rows), width)``) standard Gaussians (``"normal"``) or ``U[0, 1)``
    (``"uniform"``) keyed by ``key``, row ids ``rows`` and columns; rows are hashed in chunks."""
    width = out.shape[1] if out.dim() > 1 else 1
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    for start in range(0, rows.numel(), step):
        z = words(key, rows[start:start + step], width)
        out[start:start + step] = _numbers(z, kind).to(out.dtype).view(out[start:start + step].shape)
    return out


def _numbers(z: torch.Tensor, kind: str) -> torch.Tensor:
    high = _shift(z, 32)
    if kind == "uniform":
        return _shift(high, 8).to(torch.float32) * 2.0 ** -24
    u1 = (high.to(torch.float64) + 1.0) * 2.0 ** -32  # in (0, 1]: the logarithm is finite
    u2 = (z & 0xFFFFFFFF).to(torch.float64) * (2.0 ** -32 * 2 * math.pi)
    return u1.log_().mul_(-2.0).sqrt_().mul_(u2.cos_())
