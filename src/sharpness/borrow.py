"""The model borrowed by a measurement, and given back exactly as it was.

During the measurement it is in ``eval()`` mode with only the perturbed parameters requiring gradients,
under a forked RNG; afterwards its parameters' ``.grad`` tensors, buffers, ``requires_grad`` flags, the
train/eval mode of every submodule and the global RNG state are what they were, also when the model or
the loss raises or the measurement is interrupted. (The parameters themselves are written back by the
coordinates, :meth:`sharpness.space.WeightSpace.reset`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def borrowed(model: nn.Module, perturbed: list[nn.Parameter], device: torch.device) -> Iterator[None]:
    """Eval mode, grads only for ``perturbed``, own RNG; everything restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    chosen = {id(p) for p in perturbed}
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            model.eval()
            for p in params:
                p.requires_grad_(id(p) in chosen)
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
            for p, (grad, saved_grad) in zip(params, grads):
                if grad is not None and saved_grad is not None:
                    grad.copy_(saved_grad)
                p.grad = grad
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


