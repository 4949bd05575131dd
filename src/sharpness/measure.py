"""``measure()``: sharpness of a model on data under a :class:`~sharpness.spec.Spec`.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from sharpness.average_case import average_case, monte_carlo_variance
from sharpness.batchnorm import fold_batchnorm
from sharpness.errors import SharpnessError
from sharpness.objective import Batch, LossFn, Objective, as_batch, check_clean_output, is_classification
from sharpness.runtime import tf32
from sharpness.scaling import filter_dims, select_parameters
from sharpness.space import Probe, WeightSpace, norm_of
from sharpness.spec import Spec
from sharpness.worst_case import Best, worst_case

# How a measurement executes; the definition (the Spec) is the same in every mode.
Mode = Literal["exact", "fast"]


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
            product method used; eigen: Lanczos residuals and convergence).
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
            at a time) or ``"fast"`` (:mod:`sharpness.fast`: lower-precision search, stacked
            m-batches and draws, compiled passes where they pay; every reported value is
            evaluated in the model's dtype at a feasible point). ``Result.details["fast"]``
            says which path ran.
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
    if mode not in get_args(Mode):
        raise SharpnessError(f"mode must be one of {list(get_args(Mode))}, got {mode!r}")
    named = select_parameters(model, spec.params, spec.trainable_only)
    device = _single_device(named)
    _check_finite([p for _, p in named], [n for n, _ in named])
    batches = _prepare_batches(data, spec, device)
    start = time.perf_counter()
    if spec.fold_bn:  # measure a folded copy: the caller's model is never touched
        model = fold_batchnorm(model, batches[0])
        named = select_parameters(model, spec.params, spec.trainable_only)
    with _borrowed(model, [p for _, p in named], device), _passes_shown(model, spec, len(batches), progress):
        space = _space(model, named, spec)
        try:
            return _run(model, space, batches, spec, loss_fn, start, mode)
        finally:
            space.reset()


@contextlib.contextmanager
def _passes_shown(model: nn.Module, spec: Spec, n_batches: int, progress: bool | None) -> Iterator[None]:
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
    per_batch = {"worst": (spec.n_iters + 1) * spec.n_restarts + 1, "average": spec.n_iters + 1}.get(spec.case)
    bar = tqdm(total=None if per_batch is None else per_batch * n_batches, desc=str(spec), unit="pass",
               leave=False, dynamic_ncols=True)
    handle = model.register_forward_hook(lambda *_: bar.update(1))
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


def _run(model: nn.Module, space: WeightSpace, batches: list[Batch], spec: Spec, loss_fn: LossFn | None,
         start: float, mode: Mode) -> Result:
    objective = Objective(model, loss_fn, spec.logit_norm)
    probe = Probe(objective, space)
    clean = [_clean_pass(probe, b, i, spec, loss_fn is None) for i, b in enumerate(batches)]
    generator = torch.Generator(device=space.w0.device).manual_seed(spec.seed)
    runners = CASES
    if mode == "fast":
        from sharpness.fast import fast_cases

        runners = fast_cases()
    with tf32(False):  # true float32; the fast mode's search turns TF32 on for itself
        summary = runners[spec.case](probe, batches, clean, spec, generator)
    clean_errors = [e for _, e in clean]
    return Result(
        spec=spec,
        value=_mean(summary.per_batch),
        error_increase=None if summary.error_increase is None else _mean(summary.error_increase),
        per_batch=summary.per_batch,
        stderr=summary.stderr,
        radius=summary.radius,
        clean_loss=_mean([loss for loss, _ in clean]),
        clean_error=None if None in clean_errors else _mean([e for e in clean_errors if e is not None]),
        seconds=time.perf_counter() - start,
        n_forward=probe.n_forward,
        n_backward=probe.n_backward,
        n_perturbed=int(space.active.sum()),
        device=str(space.w0.device),
        dtype=str(space.w0.dtype).removeprefix("torch."),
        details={**space.details(), **summary.details},
        mode=mode,
    )


@dataclass
class Summary:
    """What a case runner returns: per-batch values and the statistics ``Result`` reports."""

    per_batch: list[float]
    error_increase: list[float] | None
    stderr: float | None
    radius: float | None
    details: dict[str, Any] = field(default_factory=dict)


# The unperturbed (loss, 0-1 error or None) of each m-batch.
Clean = list[tuple[float, float | None]]
CaseRunner = Callable[[Probe, list[Batch], Clean, Spec, torch.Generator], Summary]


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


def _worst(probe: Probe, batches: list[Batch], clean: Clean, spec: Spec,
           generator: torch.Generator) -> Summary:
    found = [worst_case(probe, b, spec, generator, e is not None) for b, (_, e) in zip(batches, clean)]
    return worst_summary(found, clean, spec, probe.space.ball(spec).norm)


def worst_summary(found: list[Best], clean: Clean, spec: Spec,
                  norm: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Summary:
    """Per-batch loss and error increases of the best points found, one per m-batch.

    ``norm`` measures the reported radius (default: the flat ``spec.norm``).
    """
    norm = norm or (lambda u: norm_of(u, spec.norm))
    per_batch, errors, radius = [], [], 0.0
    for best, (clean_loss, clean_error) in zip(found, clean):
        # The unperturbed point is feasible: a search that never beat it reports it.
        if float(best.loss) > clean_loss:
            per_batch.append(float(best.loss) - clean_loss)
            errors.append(None if best.error is None else float(best.error) - (clean_error or 0.0))
            radius = max(radius, float(norm(best.u)))
        else:
            per_batch.append(0.0)
            errors.append(None if clean_error is None else 0.0)
    error_increase = None if None in errors else [e for e in errors if e is not None]
    return Summary(per_batch, error_increase, _sample_stderr(per_batch), radius)


def _average(probe: Probe, batches: list[Batch], clean: Clean, spec: Spec,
             generator: torch.Generator) -> Summary:
    samples = [average_case(probe, b, spec, generator, e is not None) for b, (_, e) in zip(batches, clean)]
    return average_summary(samples, clean, spec)


def average_summary(samples: list[tuple[torch.Tensor, torch.Tensor | None]], clean: Clean, spec: Spec) -> Summary:
    """Mean increases and their Monte-Carlo error from the losses (and errors) drawn on each m-batch."""
    per_batch, errors, variances = [], [], []
    for (losses, errs), (clean_loss, clean_error) in zip(samples, clean):
        per_batch.append(float(losses.mean()) - clean_loss)
        variances.append(float(monte_carlo_variance(losses, spec.antithetic)))
        if errs is not None and clean_error is not None:
            errors.append(float(errs.mean()) - clean_error)
    stderr = math.sqrt(sum(variances)) / len(variances)
    return Summary(per_batch, errors if errors else None, None if math.isnan(stderr) else stderr, None)


CASES: dict[str, CaseRunner] = {"worst": _worst, "average": _average}


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sample_stderr(values: Sequence[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n)


# ------------------------------------------------------------------ inputs
def _single_device(named: list[tuple[str, nn.Parameter]]) -> torch.device:
    """The one device of the selected parameters (which must also share one dtype)."""
    devices = {p.device for _, p in named}
    dtypes = {p.dtype for _, p in named}
    if len(devices) > 1:
        raise SharpnessError(f"the selected parameters live on several devices: {sorted(map(str, devices))}")
    if len(dtypes) > 1:
        raise SharpnessError(
            f"the selected parameters have several dtypes {sorted(map(str, dtypes))}; cast the model or narrow params="
        )
    return devices.pop()


def _check_finite(params: list[nn.Parameter], names: list[str]) -> None:
    for name, p in zip(names, params):
        if not bool(torch.isfinite(p.detach()).all()):
            raise SharpnessError(f"parameter {name!r} holds non-finite values (NaN or inf)")


def _is_pair(data: Any) -> bool:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    return isinstance(y, torch.Tensor) and (
        isinstance(x, torch.Tensor) or (isinstance(x, Mapping) and all(isinstance(v, torch.Tensor) for v in x.values()))
    )


def _prepare_batches(data: Any, spec: Spec, device: torch.device) -> list[Batch]:
    raw = _subset_batches(data, spec) if _is_pair(data) else _listed(data)
    if not raw:
        raise SharpnessError("data holds no batch")
    batches = [as_batch(b, i) for i, b in enumerate(raw)]
    for i, batch in enumerate(batches):
        for t in batch.tensors():
            if t.device != device:
                raise SharpnessError(f"batch {i} has a tensor on {t.device}, but the model is on {device}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise SharpnessError(f"batch {i} holds non-finite values (NaN or inf) in a tensor of shape "
                                     f"{tuple(t.shape)}: clean the data first")
    return batches


def _listed(data: Any) -> list[Any]:
    if isinstance(data, (torch.Tensor, str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise SharpnessError(
            f"data must be an (X, Y) pair of tensors or an iterable of batches, got {type(data).__name__}"
        )
    return list(data)


def _subset_batches(data: Any, spec: Spec) -> list[Any]:
    x, y = data
    n = int(y.shape[0]) if y.dim() else 0
    sizes = {int(v.shape[0]) for v in (x.values() if isinstance(x, Mapping) else [x])}
    if sizes != {n}:
        raise SharpnessError(f"X and Y must have the same number of examples, got {sorted(sizes)} and {n}")
    if spec.m > n:
        raise SharpnessError(f"m={spec.m} is larger than the {n} examples in data")
    if spec.n_examples > n:
        raise SharpnessError(
            f"n_examples={spec.n_examples} is larger than the {n} examples in data; set n_examples to a multiple "
            f"of m={spec.m} that is at most {n}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed))[: spec.n_examples]
    batches = []
    for chunk in order.split(spec.m):
        idx = chunk.to(y.device)
        xs = {k: v[idx.to(v.device)] for k, v in x.items()} if isinstance(x, Mapping) else x[idx.to(x.device)]
        batches.append((xs, y[idx]))
    return batches


# ------------------------------------------------------------- restoration
@contextlib.contextmanager
def _borrowed(model: nn.Module, perturbed: list[nn.Parameter], device: torch.device) -> Iterator[None]:
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


# The other cases live in modules of their own that build Summary objects, hence imported last.
from sharpness.curvature import eigen_case, trace_case  # noqa: E402
from sharpness.keskar import keskar_case  # noqa: E402
from sharpness.pacbayes import pacbayes_case  # noqa: E402

CASES.update(trace=trace_case, eigen=eigen_case, keskar=keskar_case, pacbayes=pacbayes_case)
