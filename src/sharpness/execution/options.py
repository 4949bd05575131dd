"""What the fast mode may use, and what it chooses per device: :class:`FastOptions` and :func:`plan`.

:func:`options` overrides the options for the ``measure(..., mode="fast")`` calls of a block; outside
any block the defaults apply, which let :func:`plan` choose per device.

>>> p = plan(FastOptions(), torch.device("cpu"), torch.float32, has_conv=True, n_batches=8, n_draws=20)
>>> (p.precision, p.stack, p.draws, p.compile)
('fp32', 1, 1, 'off')
>>> chunks(20, 8)
[8, 8, 4]
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from sharpness.errors import SharpnessError

Precision = Literal["auto", "fp32", "tf32", "bf16"]
Compile = Literal["auto", "off", "on", "graphs", "cudagraphs", "trace"]
Compiled = Literal["off", "on", "graphs", "cudagraphs", "trace"]


@dataclass(frozen=True)
class FastOptions:
    """What the fast mode may use; ``auto`` and ``0`` let :func:`plan` decide per device.

    Attributes:
        precision: arithmetic of the worst-case search's products: ``fp32`` (the model's own),
            ``tf32`` (TF32 tensor cores on CUDA; emulated elsewhere, slowly, to check the
            numerics) or ``bf16``. The average case always evaluates in the model's dtype.
        stack: m-batches searched in one pass (``vmap`` over stacked weights); 0: auto.
        draws: average-case draws evaluated in one pass; 0: auto.
        compile: ``off``; ``on`` (``torch.compile`` with Inductor); ``graphs`` (Inductor with CUDA
            graphs); ``cudagraphs`` (CUDA graphs of the captured pass without code generation:
            no launch overhead, compiles in seconds); ``trace`` (capture with TorchDynamo, run
            the captured graph eagerly: checks on any device, in seconds, that the pass
            captures; no speed-up).
        memory_fraction: share of the free device memory a stack may use (auto stacking).
    """

    precision: Precision = "auto"
    stack: int = 0
    draws: int = 0
    compile: Compile = "auto"
    memory_fraction: float = 0.7

    def __post_init__(self) -> None:
        for name in ("stack", "draws"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SharpnessError(f"FastOptions.{name} must be an integer >= 0 (0: auto), got {value!r}")
        if self.precision not in get_args(Precision):
            raise SharpnessError(f"FastOptions.precision must be one of {list(get_args(Precision))}, "
                                 f"got {self.precision!r}")
        if self.compile not in get_args(Compile):
            raise SharpnessError(f"FastOptions.compile must be one of {list(get_args(Compile))}, got {self.compile!r}")
        if not isinstance(self.memory_fraction, (int, float)) or not 0 < self.memory_fraction <= 1:
            raise SharpnessError(f"FastOptions.memory_fraction must lie in (0, 1], got {self.memory_fraction!r}")


_OPTIONS: contextvars.ContextVar[FastOptions | None] = contextvars.ContextVar("sharpness_fast", default=None)


def current_options() -> FastOptions:
    """The options in force (the defaults outside any :func:`options` block)."""
    return _OPTIONS.get() or FastOptions()


@contextlib.contextmanager
def options(**overrides: Any) -> Iterator[FastOptions]:
    """Override :class:`FastOptions` fields for the ``measure(..., mode="fast")`` calls in the block.

    >>> with options(stack=2, precision="bf16") as o:
    ...     (o.stack, o.precision)
    (2, 'bf16')
    """
    chosen = dataclasses.replace(current_options(), **overrides)
    token = _OPTIONS.set(chosen)
    try:
        yield chosen
    finally:
        _OPTIONS.reset(token)


@dataclass(frozen=True)
class Plan:
    """Resolved choices for one measurement: no ``auto`` left (``stack`` / ``draws`` 0: by memory)."""

    precision: Literal["fp32", "tf32", "bf16"]
    stack: int
    draws: int
    compile: Compiled
    memory_fraction: float


def plan(opts: FastOptions, device: torch.device, dtype: torch.dtype, has_conv: bool, n_batches: int,
         n_draws: int) -> Plan:
    """Per-device defaults.

    On CUDA: TF32 search, compiled passes; models without convolutions stack as many m-batches
    as memory allows and chunk the draws (batched matmuls pay), models with convolutions keep
    one m-batch per pass (``vmap`` makes grouped convolutions of them, which were measured
    slower than dense ones). Elsewhere: the exact arithmetic, one m-batch per pass, eager.
    A ``stack`` of 0 left in the plan means "as many as memory allows".
    """
    cuda = device.type == "cuda"
    precision = opts.precision if opts.precision != "auto" else ("tf32" if cuda and dtype == torch.float32 else "fp32")
    many = cuda and not has_conv
    stack = opts.stack or (0 if many else 1)
    n_chunk = opts.draws or (divisor_at_most(n_draws, 16) if many else 1)
    compiled = opts.compile if opts.compile != "auto" else ("on" if cuda else "off")
    return Plan(precision, min(stack, n_batches) if stack else 0, min(n_chunk, n_draws), compiled,
                opts.memory_fraction)


def divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of ``n`` that is at most ``cap`` (equal chunks compile once)."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def chunks(n: int, size: int) -> list[int]:
    """Sizes of consecutive chunks of ``n`` items, ``size`` at a time."""
    return [min(size, n - i) for i in range(0, n, size)]

