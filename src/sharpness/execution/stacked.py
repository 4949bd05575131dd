"""Probes whose points are stacked in rows: one per m-batch, or one per draw on a shared m-batch.

A :class:`StackedProbe` takes ``u`` of shape ``(rows, numel)`` and returns losses and errors of shape
``(rows, 1)`` and gradients of shape ``(rows, numel)``, so the searches of
:mod:`sharpness.worst_case` and the draws of :mod:`sharpness.average_case` run on it unchanged. Each
kind of pass (with or without gradient, with or without error) runs on the first configuration of its
ladder (:mod:`sharpness.execution.ladder`) that does not raise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sharpness.execution.functional import FunctionalStep, PassOut, compiled
from sharpness.execution.ladder import Rung
from sharpness.execution.precision import arithmetic
from sharpness.objective import Batch
from sharpness.space import Probe, WeightSpace


class Pass:
    """One kind of pass (with or without gradient, with or without error) on one rung of the ladder.

    The module engine writes each row's point into the model through the exact probe's own
    :meth:`~sharpness.space.Probe.evaluate`, one row at a time; the functional engine is
    :class:`~sharpness.execution.functional.FunctionalStep`, for flat coordinates only.
    """

    def __init__(self, probe: Probe, rung: Rung, rows: int, shared: bool, grad: bool, with_error: bool) -> None:
        # With one row a shared batch and a stacked one are the same computation.
        self.probe, self.rung, self.rows, self.shared = probe, rung, rows, shared and rows > 1
        self.grad, self.with_error = grad, with_error
        self.call: Callable[..., PassOut] = self._module
        if rung.engine == "vmap":
            space, objective = probe.space, probe.objective
            assert isinstance(space, WeightSpace) and space.flat, "the functional engine needs flat coordinates"
            names = {id(p): n for n, p in objective.model.named_parameters()}
            step = FunctionalStep(objective.model, objective, tuple(names[id(p)] for p in space.params),
                                  tuple(space.shapes), tuple(space.numels), space.w0.dtype, rung.cast, rows,
                                  self.shared, grad, with_error)
            self.call = step if rung.compile == "off" else compiled(step, rung.compile)

    def __call__(self, u: torch.Tensor, batch: Batch) -> PassOut:
        graphs = self.rung.compile in ("graphs", "cudagraphs")
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        space = self.probe.space
        # The arithmetic is set around the (compiled) call, not inside it: nothing to capture.
        with arithmetic(self.rung.cast, space.w0.device):
            loss, error, g = self.call(u, space.w0, space.c, batch.args, batch.kwargs, batch.target)
        if graphs:  # the next replay reuses the output buffers: keep copies
            loss, error, g = loss.clone(), error.clone(), None if g is None else g.clone()
        return loss, error, g

    def _module(self, u: torch.Tensor, w0: torch.Tensor, c: torch.Tensor, args: tuple[Any, ...],
                kwargs: dict[str, Any], target: torch.Tensor) -> PassOut:
        batch = Batch(args, kwargs, target)
        losses, errors, grads = [], [], []
        for r in range(self.rows):
            row = batch if self.shared or self.rows == 1 else row_of(batch, r)
            loss, error, g = self.probe.evaluate(u[r], row, self.with_error, self.grad)
            losses.append(loss.to(w0.dtype))
            errors.append(w0.new_zeros(()) if error is None else error.to(w0.dtype))
            if g is not None:
                grads.append(g)
        return (torch.stack(losses).view(-1, 1), torch.stack(errors).view(-1, 1),
                torch.stack(grads) if self.grad else None)


class StackedProbe(Probe):
    """A probe whose points are stacked in rows: one per m-batch, or one per draw on a shared m-batch.

    It counts into the passes of the probe it stacks. The first call of each kind of pass tries the
    configurations of :func:`~sharpness.execution.ladder.ladder` in order and keeps the first that runs;
    ``notes`` records what failed.
    """

    def __init__(self, probe: Probe, rows: int, shared: bool, rungs: Sequence[Rung], compile_forward: bool) -> None:
        super().__init__(probe.objective, probe.space, probe.passes)
        self.exact = probe
        self.rows, self.shared, self.rungs = rows, shared, list(rungs)
        self.compile_forward = compile_forward
        self.notes: list[str] = []
        self._passes: dict[tuple[bool, bool], Pass] = {}

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.rows, self.space.numel, dtype=self.space.w0.dtype, device=self.space.w0.device)

    @property
    def path(self) -> str:
        ran = sorted(self._passes.items(), key=lambda kv: not kv[0][0])  # gradient passes first
        rung = ran[0][1].rung if ran else self.rungs[0]
        return rung.describe(self.rows, self.shared)

    def value(self, u: torch.Tensor, batch: Batch, with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        loss, error, _ = self._run(u, batch, grad=False, with_error=with_error)
        self.n_forward += self.rows
        return loss, error if with_error else None

    def value_and_grad(self, u: torch.Tensor, batch: Batch,
                       with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        loss, error, g = self._run(u, batch, grad=True, with_error=with_error)
        assert g is not None
        self.n_forward += self.rows
        self.n_backward += self.rows
        return loss, error if with_error else None, g

    def _run(self, u: torch.Tensor, batch: Batch, grad: bool, with_error: bool) -> PassOut:
        key = (grad, with_error)
        if key in self._passes:
            return self._passes[key](u, batch)
        for i, rung in enumerate(self.rungs):
            if not (grad or self.compile_forward):  # a rare pass: not worth a compilation
                rung = dataclasses.replace(rung, compile="off")
            candidate = Pass(self.exact, rung, self.rows, self.shared, grad, with_error)
            try:
                out = candidate(u, batch)
            except Exception as e:  # the plainest rung re-raises: then it is the model's own error
                if i == len(self.rungs) - 1:
                    raise
                self.notes.append(f"{rung.describe(self.rows, self.shared)} failed ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:120] if str(e) else ''})")
                continue
            self._passes[key] = candidate
            # Later kinds of pass (e.g. the forward-only last iterate) start from the rung that ran.
            self.rungs = self.rungs[i:]
            return out
        raise AssertionError("unreachable: the last rung re-raises")


def row_of(batch: Batch, row: int) -> Batch:
    """Row ``row`` of a stacked batch: one m-batch."""
    return Batch(tuple(a[row] for a in batch.args), {k: v[row] for k, v in batch.kwargs.items()}, batch.target[row])


# ------------------------------------------------------------- stacking
def _signature(batch: Batch) -> tuple[Any, ...] | None:
    """Shapes and dtypes of a batch's tensors, or None when it holds something that cannot be stacked."""
    if not all(isinstance(v, torch.Tensor) for v in batch.kwargs.values()):
        return None
    return (tuple((a.shape, a.dtype) for a in batch.args),
            tuple((k, v.shape, v.dtype) for k, v in sorted(batch.kwargs.items())),
            batch.target.shape, batch.target.dtype)


def stack_groups(batches: list[Batch], size: int) -> list[list[int]]:
    """Indices of consecutive batches of equal shapes, ``size`` at a time (an unstackable batch goes alone)."""
    groups: list[list[int]] = []
    for i, b in enumerate(batches):
        sig = _signature(b)
        last = groups[-1] if groups else None
        if (last is not None and sig is not None and len(last) < size
                and _signature(batches[last[0]]) == sig):
            last.append(i)
        else:
            groups.append([i])
    return groups


def stack_batches(batches: list[Batch]) -> Batch:
    """One batch whose tensors carry a leading dimension over ``batches`` (all of equal shapes)."""
    first = batches[0]
    args = tuple(torch.stack([b.args[i] for b in batches]) for i in range(len(first.args)))
    kwargs = {k: torch.stack([b.kwargs[k] for b in batches]) for k in first.kwargs}
    return Batch(args, kwargs, torch.stack([b.target for b in batches]))


