"""``measure()``: sharpness of a model on data under a :class:`~sharpness.spec.Spec`.

``measure`` validates its input, borrows the model (:mod:`sharpness.borrow`), builds the coordinates
of the spec, asks the mode's executor (:mod:`sharpness.execution`) to run the case
(:mod:`sharpness.cases`) and reports what it found as a :class:`Result`.

The model is borrowed, never changed: during the measurement it is in ``eval()``
mode with only the selected parameters requiring gradients; afterwards its
parameters, buffers, ``.grad`` tensors, ``requires_grad`` flags and the
train/eval mode of every submodule are exactly what they were, also when the
model or the loss raises or the measurement is interrupted. The global RNG state
is left untouched; draws come from a generator seeded by ``spec.seed`` on the
model's device (so the same spec may draw differently on the CPU and on a GPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sharpness import reach
from sharpness.batches import check_finite, prepare_batches, single_device
from sharpness.batchnorm import fold_batchnorm
from sharpness.borrow import borrowed
from sharpness.cases import CASES, Case, Context
from sharpness.cases.summary import mean
from sharpness.errors import SharpnessError
from sharpness.execution import MODES, Mode, executor_for
from sharpness.execution.exact import ExactExecutor
from sharpness.objective import Batch, LossFn, Objective, check_clean_output, is_classification
from sharpness.runtime import tf32
from sharpness.scaling import filter_dims, select_parameters
from sharpness.space import Probe, WeightSpace
from sharpness.spec import Spec


@dataclass(frozen=True)
class Result:
    """What one measurement found and what it cost.

    Attributes:
        value: mean over m-batches of the loss increase (trace, eigen, keskar, pacbayes: of the
            quantity their :class:`~sharpness.spec.Spec` case defines).
        error_increase: same for the 0-1 error (classifiers), else ``None``.
        per_batch: the loss increase of each m-batch.
        stderr: average case: Monte-Carlo standard error over draws and batches;
            worst case: standard error over m-batches (``None`` with one m-batch).
        radius: worst case: max over m-batches of ``||u||_p`` at the reported points
            (never above ``rho``); ``None`` for the average case.
        clean_loss, clean_error: means over m-batches at the unperturbed weights.
        details: what a case adds, JSON-serialisable (e.g. trace and eigen: the Hessian-vector
            product method used; eigen: Lanczos residuals and convergence; the fast mode: the path
            that ran, ``details["fast"]``; the average case: ``details["draw_stream"]``, the version of
            the draws' stream, 1 or 2, see :mod:`sharpness.average_case`).
        mode: the mode that ran: ``"fast"`` only when the case's passes ran in the fast mode (a case or
            coordinates without a fast path run exactly, and ``details["fast"]["path"]`` says why).
    """

    spec: Spec
    value: float
    error_increase: float | None
    per_batch: list[float]
    stderr: float | None
    radius: float | None
    clean_loss: float
    clean_error: float | None
    seconds: float
    n_forward: int
    n_backward: int
    n_perturbed: int
    device: str
    dtype: str
    torch_version: str = field(default_factory=lambda: torch.__version__)
    details: dict[str, Any] = field(default_factory=dict)
    mode: str = "exact"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record, with the spec in both its dict and string forms."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "spec"}
        return {"spec": self.spec.to_dict(), "spec_str": str(self.spec), "spec_id": self.spec.id, **out}


def measure(model: nn.Module, data: Any, spec: Spec, loss_fn: LossFn | None = None, *,
            mode: Mode = "exact", progress: bool | None = None) -> Result:
    """Measure the sharpness of ``model`` on ``data`` as ``spec`` defines it.

    Args:
        model: any ``nn.Module``; measured in its own dtype and on its own device.
        data: an iterable of batches, each one m-batch used as given; or a pair of
            tensors ``(X, Y)`` (``X`` may be a mapping of keyword tensors) from which a
            seeded random subset of ``spec.n_examples`` is split into m-batches of ``spec.m``.
            A batch is ``(inputs, targets)`` or a mapping with ``labels``.
        spec: the definition.
        loss_fn: ``loss_fn(output, target) -> scalar``; default cross-entropy
            (``-100`` targets ignored for sequence outputs).
        mode: how to execute, not what to measure: ``"exact"`` (the model's dtype, one pass
            at a time) or ``"fast"`` (:mod:`sharpness.execution.fast`: lower-precision search, stacked
            m-batches and draws, compiled passes where they pay; every reported value is
            evaluated in the model's dtype at a feasible point). ``Result.details["fast"]``
            says which path ran; ``Result.mode`` says ``"exact"`` where the case has no fast path.
        progress: a progress bar of the model's passes on stderr (``None``: when stderr is a terminal;
            needs ``tqdm``).

    Returns:
        A :class:`Result`.

    Raises:
        SharpnessError: for bad input, before any search starts. Exceptions raised by
            the model or ``loss_fn`` propagate unchanged, after the model is restored.
    """
    if not isinstance(spec, Spec):
        raise SharpnessError(f"spec must be a sharpness.Spec, got {type(spec).__name__}")
    if not isinstance(model, nn.Module):
        raise SharpnessError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mode not in MODES:
        raise SharpnessError(f"mode must be one of {list(MODES)}, got {mode!r}")
    case = CASES[spec.case]
    named = select_parameters(model, spec.params, spec.trainable_only)
    device = single_device(named)
    check_finite([p for _, p in named], [n for n, _ in named])
    batches = prepare_batches(data, spec, device)
    start = time.perf_counter()
    if spec.fold_bn:  # measure a folded copy: the caller's model is never touched
        model = fold_batchnorm(model, batches[0])
        named = select_parameters(model, spec.params, spec.trainable_only)
    with borrowed(model, [p for _, p in named], device), _passes_shown(model, spec, case, len(batches), progress):
        space = _space(model, named, spec)
        try:
            return _run(case, model, space, batches, spec, loss_fn, start, mode)
        finally:
            space.reset()


@contextlib.contextmanager
def _passes_shown(model: nn.Module, spec: Spec, case: Case, n_batches: int, progress: bool | None) -> Iterator[None]:
    """A bar that counts the model's forward passes (a forward hook, removed on exit), out of those the case
    needs where that is known in advance."""
    import sys

    show = sys.stderr.isatty() if progress is None else progress
    try:
        from tqdm.auto import tqdm
    except ImportError:
        show = False
    if not show:
        yield
        return
    per_batch = None if case.passes_per_batch is None else case.passes_per_batch(spec)
    bar = tqdm(total=None if per_batch is None else per_batch * n_batches, desc=str(spec), unit="pass",
               leave=False, dynamic_ncols=True)
    def count(*_: object) -> None:  # a forward hook's return value would replace the output: return nothing
        bar.update(1)

    handle = model.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def _space(model: nn.Module, named: list[tuple[str, nn.Parameter]], spec: Spec) -> WeightSpace:
    """The coordinates of ``spec``: flat normalised weights, or the geodesic chart of the symmetry blocks."""
    if spec.geometry == "flat":
        return WeightSpace([p for _, p in named], [n for n, _ in named], spec.scaling, spec.eta, filter_dims(model))
    from sharpness.geodesic import GeodesicSpace

    return GeodesicSpace(model, named, spec, filter_dims(model))


def _run(case: Case, model: nn.Module, space: WeightSpace, batches: list[Batch], spec: Spec,
         loss_fn: LossFn | None, start: float, mode: Mode) -> Result:
    probe = Probe(Objective(model, loss_fn, spec.logit_norm), space)
    found = reach.embeddings(model, space)
    clean, reached = [], []
    for i, b in enumerate(batches):
        rows: dict[int, torch.Tensor | None] = {}
        with reach.recorded(found, rows):
            clean.append(_clean_pass(probe, b, i, spec, loss_fn is None))
        reached.append(rows)
    generator = torch.Generator(device=space.w0.device).manual_seed(spec.seed)
    executor = executor_for(mode) if case.runs_exactly is None else ExactExecutor()
    with tf32(False):  # true float32; the fast mode's search turns TF32 on for itself
        summary = case.run(Context(probe, space, batches, clean, spec, generator, executor,
                                   reached if found else None))
    ran, ran_details = executor.report()
    if mode == "fast" and case.runs_exactly is not None:
        ran_details = {"fast": {"path": f"exact: {case.runs_exactly}", "precision": "exact", "compile": "off",
                                "fallbacks": []}}
    clean_errors = [e for _, e in clean]
    return Result(
        spec=spec,
        value=mean(summary.per_batch),
        error_increase=None if summary.error_increase is None else mean(summary.error_increase),
        per_batch=summary.per_batch,
        stderr=summary.stderr,
        radius=summary.radius,
        clean_loss=mean([loss for loss, _ in clean]),
        clean_error=None if None in clean_errors else mean([e for e in clean_errors if e is not None]),
        seconds=time.perf_counter() - start,
        n_forward=probe.n_forward,
        n_backward=probe.n_backward,
        n_perturbed=int(torch.count_nonzero(space.active)),
        device=str(space.w0.device),
        dtype=str(space.w0.dtype).removeprefix("torch."),
        details={**space.details(), **summary.details, **ran_details},
        mode=ran,
    )


def _clean_pass(probe: Probe, batch: Batch, index: int, spec: Spec, default_loss: bool) -> tuple[float, float | None]:
    """Unperturbed loss and error of one batch; validates the output before any search."""
    probe.n_forward += 1
    with torch.no_grad():
        logits = probe.objective.logits(batch)
        check_clean_output(logits, batch, index, spec.logit_norm, default_loss)
        loss = probe.objective.loss(logits, batch)
    if loss.numel() != 1:
        raise SharpnessError(f"batch {index}: the loss must be a scalar, got shape {tuple(loss.shape)}")
    value = float(loss)
    if not math.isfinite(value):
        raise SharpnessError(f"batch {index}: the clean loss is not finite ({value})")
    if not is_classification(logits, batch.target):
        return value, None
    return value, float((logits.argmax(dim=1) != batch.target).double().mean())


__all__ = ["Mode", "Result", "measure"]
