"""Process-wide torch settings as contexts that restore what they change (torch is imported on entry,
so the command line can import this without paying for torch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


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
