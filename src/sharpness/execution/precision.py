"""Reduced-precision arithmetic for a search: the operands of every product rounded to TF32 or bfloat16.

A search only has to find a good feasible point, so its products may be rounded; what is reported is
evaluated again in the model's own dtype (:mod:`sharpness.execution.fast`).

>>> import torch
>>> x = torch.tensor([1.0 + 2.0**-12])
>>> float(_to_tf32(x)) == 1.0  # TF32 keeps 10 of float32's 23 mantissa bits
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sharpness.runtime import tf32

# The arithmetic of a pass: the model's own, or its products rounded.
Cast = Literal["none", "tf32", "bf16"]

# The products whose operands a reduced-precision search rounds: matrix products, convolutions, attention.
PRODUCTS = frozenset({
    F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
    F.scaled_dot_product_attention, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.bmm,
    torch.addmm, torch.baddbmm, torch.einsum,
})


class ReducedProducts(TorchFunctionMode):
    """Float32 operands of every product rounded to bfloat16 or TF32; everything else in float32.

    ``bf16``: the product runs in bfloat16 and its result comes back as float32. Unlike
    ``torch.autocast`` this composes with ``vmap`` over the weights of normalisation layers,
    since normalisations, softmaxes and the loss only ever see float32.
    ``tf32``: the operands are rounded to TF32's 10-bit mantissa and multiplied in float32,
    which is what TF32 tensor cores compute; used off CUDA to check those numerics (the
    rounding costs time; on CUDA the tensor cores themselves are used, see :func:`arithmetic`).
    """

    def __init__(self, kind: Literal["bf16", "tf32"]) -> None:
        super().__init__()
        self.round = _to_bf16 if kind == "bf16" else _to_tf32

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in PRODUCTS:
            return func(*args, **kwargs)
        out = func(*[self.round(a) for a in args], **{k: self.round(v) for k, v in kwargs.items()})
        return out.float() if isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 else out


def _is_fp32(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.float32


def _to_bf16(t: Any) -> Any:
    return t.to(torch.bfloat16) if _is_fp32(t) else t


def _to_tf32(t: Any) -> Any:
    """Round to nearest TF32 (drop 13 of float32's 23 mantissa bits); the gradient passes straight through."""
    if not _is_fp32(t):
        return t
    bits = t.detach().contiguous().view(torch.int32)
    rounded = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return t + (rounded - t).detach()


def arithmetic(kind: Cast, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The arithmetic of a pass: the model's own (``none``), bfloat16 or TF32 products."""
    if kind == "none":
        return contextlib.nullcontext()
    if kind == "tf32" and device.type == "cuda":
        return tf32(True)
    return ReducedProducts(kind)

