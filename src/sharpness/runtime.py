"""Process-wide torch settings as contexts that restore what they change (torch is imported on entry,
so the command line can import this without paying for torch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sharpness.errors import SharpnessError


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None`` keeps the setting), then restore it.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 tensor cores for float32 matrix products and convolutions on CUDA.

    cuDNN allows TF32 convolutions by default, so exact float32 must switch them off.

    >>> import torch
    >>> with tf32(False):
    ...     torch.backends.cudnn.allow_tf32
    False
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def device_named(name: str, what: str = "device") -> Any:
    """The torch device ``name`` names (``"auto"``: the first GPU if there is one, else the CPU), checked:
    a malformed name or a device this torch build cannot use is a :class:`SharpnessError` naming ``what``.

    >>> str(device_named("cpu"))
    'cpu'
    >>> device_named("gpu0", "--device")
    Traceback (most recent call last):
    ...
    sharpness.errors.SharpnessError: --device: 'gpu0' is not a torch device (e.g. cpu, cuda, cuda:1, mps, auto)
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SharpnessError(f"{what}: {name!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps, auto)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise SharpnessError(f"{what}: {name!r} is not available: this machine has {count} CUDA device(s) "
                                 f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SharpnessError(f"{what}: {name!r} is not available on this machine")
    return device


def check_threads(n: int | None, what: str = "--threads") -> int | None:
    """``n`` if it is a usable thread count (or ``None``: torch's choice), else a :class:`SharpnessError`."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise SharpnessError(f"{what}: expected >= 1, got {n}")
    return n
