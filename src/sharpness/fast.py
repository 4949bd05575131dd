r"""The fast mode of :func:`~sharpness.measure.measure`: the same definitions, cheaper passes.

``measure(..., mode="fast")`` changes how a measurement executes, never what it measures:

* **Reduced-precision search.** The worst case's Auto-PGD takes its passes with the
  operands of every matrix product, convolution and attention rounded to TF32 (the default
  on CUDA: TF32 tensor cores) or bfloat16 (opt-in, :class:`ReducedProducts`); everything
  else stays in float32. The search only has to find a good feasible point: the best point of
  each m-batch is then re-evaluated in the model's own dtype by the exact mode's probe, so the
  reported loss is the exact loss at a feasible point (a lower bound on the maximum, as in the
  exact mode). Radii, feasibility and restoration are the exact mode's: the same Auto-PGD code
  and projections run, on points stacked in rows. The price is a slightly different
  trajectory: on small networks trained on digits, TF32 searches stay within 1% of the exact
  values (the largest gap seen: 0.6%, the CNN's L2 search), bfloat16 searches fall up to about 2%
  short (``tests/bench/test_fast.py``).
* **More work per launch.** Several m-batches are searched in one pass with
  ``torch.func.functional_call`` and ``vmap`` over stacked perturbed weights (batched matmuls
  for linear layers, grouped convolutions for convolutions), and the average case evaluates
  several draws in one pass, in chunks. The average case has no search: its draws are
  evaluated in the model's dtype, and they are the exact mode's draws in the same order.
* **Captured passes.** ``torch.compile`` of the pass (optionally with CUDA graphs).

Which of these pay depends on the device and the model, so the defaults are chosen per device
(:func:`plan`); :func:`options` overrides them for a block. Every configuration falls back
cleanly (:func:`ladder`): when the first pass of one raises, the next simpler one is tried
(compile off, then the model itself one row at a time, then the model's own arithmetic), and
``Result.details["fast"]`` names the path that ran and the fallbacks taken. An exception that
the plainest path raises too is the model's own and propagates unchanged.

On the CPU the defaults keep the exact mode's arithmetic and one m-batch per pass: there
reduced precision is emulated (slow), ``vmap`` over weights turns convolutions into slower
grouped ones, and compiling costs minutes; the fast mode there is the exact computation plus
one re-evaluation per m-batch. Every GPU-side path runs on the CPU when asked for
(``options(precision="tf32", stack=2, draws=4, compile="trace")``), which is how it is tested.

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
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.overrides import TorchFunctionMode

from sharpness.average_case import draws
from sharpness.errors import SharpnessError
from sharpness.measure import CASES, Clean, Summary, average_summary, worst_summary
from sharpness.objective import Batch, Objective, logits_of
from sharpness.runtime import tf32
from sharpness.space import Probe
from sharpness.spec import Spec
from sharpness.worst_case import Best, worst_case

Precision = Literal["auto", "fp32", "tf32", "bf16"]
Compile = Literal["auto", "off", "on", "graphs", "cudagraphs", "trace"]
Compiled = Literal["off", "on", "graphs", "cudagraphs", "trace"]
Engine = Literal["vmap", "module"]
Cast = Literal["none", "tf32", "bf16"]
# A pass returns losses (rows, 1), errors (rows, 1) and, with gradient, g_u (rows, numel).
PassOut = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]

# Bytes of flat vectors kept per row by the search: u, u_prev, z, best u, g, g_best, the
# weights, their gradient and temporaries of the update (counted generously).
FLAT_VECTORS = 12


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


# ----------------------------------------------------------------- the pass
@dataclass(frozen=True)
class Rung:
    """One configuration of the pass, from the fastest to the plainest."""

    engine: Engine
    cast: Cast
    compile: Compiled

    def describe(self, rows: int, shared: bool) -> str:
        unit = ("draw", "draws") if shared else ("m-batch", "m-batches")
        precision = {"none": "the model's dtype", "tf32": "TF32 products", "bf16": "bf16 products"}[self.cast]
        execution = {"off": "eager", "on": "compiled", "graphs": "compiled with CUDA graphs",
                     "cudagraphs": "CUDA graphs", "trace": "captured, run eagerly"}[self.compile]
        return f"{precision}, {rows} {unit[rows > 1]} per pass ({self.engine}, {execution})"


def ladder(precision: str, compiled: str, rows: int) -> list[Rung]:
    """The requested configuration first, then each simpler fallback once.

    One row, uncompiled, goes straight to the model itself (``functional_call`` would only add overhead).

    >>> [(r.engine, r.cast, r.compile) for r in ladder("bf16", "on", 4)]
    [('vmap', 'bf16', 'on'), ('vmap', 'bf16', 'off'), ('module', 'bf16', 'off'), ('module', 'none', 'off')]
    >>> [(r.engine, r.cast, r.compile) for r in ladder("fp32", "off", 1)]
    [('module', 'none', 'off')]
    """
    low = cast(Cast, "none" if precision == "fp32" else precision)
    mode = cast(Compiled, compiled)
    rungs = [Rung("vmap", low, mode), Rung("vmap", low, "off"), Rung("module", low, "off"),
             Rung("module", "none", "off")]
    if rows == 1 and mode == "off":
        rungs = rungs[2:]
    return list(dict.fromkeys(rungs))


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


@dataclass(frozen=True, eq=False)
class FunctionalStep:
    """The functional engine: loss, error and :math:`g_u` of points stacked in rows, never writing the model.

    Weights reach the model through ``torch.func.functional_call``; rows are mapped with
    ``vmap``. It holds only what shapes the computation, so a compiled copy can be reused by
    later measurements of the same model.
    """

    model: nn.Module
    objective: Objective
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dtype: torch.dtype
    cast: Cast
    rows: int
    shared: bool
    grad: bool
    with_error: bool

    def row(self, w: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any],
            target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = (t.view(s) for t, s in zip(w.split(self.numels), self.shapes))
        weights = dict(zip(self.names, views))

        def call(*a: Any, **k: Any) -> torch.Tensor:
            # Logits back in the model's dtype: the loss is never taken in bfloat16.
            return logits_of(functional_call(self.model, weights, a, k)).to(self.dtype)

        functional = dataclasses.replace(self.objective, model=cast(nn.Module, call))
        loss, error = functional(Batch(args, kwargs, target), self.with_error)
        return loss.to(self.dtype), (error if error is not None else loss.new_zeros(())).to(self.dtype)

    def __call__(self, u: torch.Tensor, w0: torch.Tensor, c: torch.Tensor, args: tuple[Any, ...],
                 kwargs: dict[str, Any], target: torch.Tensor) -> PassOut:
        w = torch.addcmul(w0, c, u)
        fn: Callable[..., Any] = grad_and_value(self.row, has_aux=True) if self.grad else self.row
        if self.rows == 1:
            out = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), fn(w[0], args, kwargs, target))
        else:
            dims = None if self.shared else 0
            out = vmap(fn, in_dims=(0, dims, dims, dims))(w, args, kwargs, target)
        if self.grad:
            g, (loss, error) = out
            return loss.view(-1, 1), error.view(-1, 1), g * c
        loss, error = out
        return loss.view(-1, 1), error.view(-1, 1), None


# Compiled passes are kept (a few, most recent first) so that repeated measurements of a model
# with the same configuration do not compile again.
_COMPILED: OrderedDict[tuple[Any, ...], Callable[..., Any]] = OrderedDict()
_KEEP_COMPILED = 8


def _compiled(step: FunctionalStep, mode: Compiled) -> Callable[..., Any]:
    objective = step.objective
    key = (id(step.model), step.names, step.dtype, step.cast, step.rows, step.shared, step.grad, step.with_error,
           objective.loss_fn, objective.logit_norm, mode)
    if key not in _COMPILED:
        backend = {"trace": "eager", "cudagraphs": "cudagraphs"}.get(mode, "inductor")
        _COMPILED[key] = torch.compile(step, dynamic=False, backend=backend,
                                       mode="reduce-overhead" if mode == "graphs" else None)
        while len(_COMPILED) > _KEEP_COMPILED:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return _COMPILED[key]


class Pass:
    """One kind of pass (with or without gradient, with or without error) on one rung of the ladder.

    The module engine writes each row's point into the model (like the exact probe) and runs it
    one row at a time; the functional engine is :class:`FunctionalStep`.
    """

    def __init__(self, probe: Probe, rung: Rung, rows: int, shared: bool, grad: bool, with_error: bool) -> None:
        # With one row a shared batch and a stacked one are the same computation.
        self.probe, self.rung, self.rows, self.shared = probe, rung, rows, shared and rows > 1
        self.grad, self.with_error = grad, with_error
        self.call: Callable[..., PassOut] = self._module
        if rung.engine == "vmap":
            space, objective = probe.space, probe.objective
            names = {id(p): n for n, p in objective.model.named_parameters()}
            step = FunctionalStep(objective.model, objective, tuple(names[id(p)] for p in space.params),
                                  tuple(space.shapes), tuple(space.numels), space.w0.dtype, rung.cast, rows,
                                  self.shared, grad, with_error)
            self.call = step if rung.compile == "off" else _compiled(step, rung.compile)

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
        space, objective = self.probe.space, self.probe.objective
        batch = Batch(args, kwargs, target)
        losses, errors, grads = [], [], []
        for r in range(self.rows):
            space.set(u[r])
            row = batch if self.shared or self.rows == 1 else _row_of(batch, r)
            with torch.enable_grad() if self.grad else torch.no_grad():
                loss, error = objective(row, self.with_error)
                if self.grad:
                    grads.append(space.grad_u(loss))
            losses.append(loss.detach().to(w0.dtype))
            errors.append(w0.new_zeros(()) if error is None else error.to(w0.dtype))
        return (torch.stack(losses).view(-1, 1), torch.stack(errors).view(-1, 1),
                torch.stack(grads) if self.grad else None)


def _row_of(batch: Batch, row: int) -> Batch:
    return Batch(tuple(a[row] for a in batch.args), {k: v[row] for k, v in batch.kwargs.items()}, batch.target[row])


class StackedProbe(Probe):
    """A probe whose points are stacked in rows: one per m-batch, or one per draw on a shared m-batch.

    Losses and errors come back as ``(rows, 1)``, gradients as ``(rows, numel)``. The first call
    of each kind of pass tries the configurations of :func:`ladder` in order and keeps the first
    that runs; ``notes`` records what failed.
    """

    def __init__(self, probe: Probe, rows: int, shared: bool, rungs: Sequence[Rung], compile_forward: bool) -> None:
        super().__init__(probe.objective, probe.space)
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

    def _run(self, u: torch.Tensor, batch: Batch, grad: bool,
             with_error: bool) -> PassOut:
        key = (grad, with_error)
        if key in self._passes:
            return self._passes[key](u, batch)
        for i, rung in enumerate(self.rungs):
            if not (grad or self.compile_forward):  # a rare pass: not worth a compilation
                rung = dataclasses.replace(rung, compile="off")
            candidate = Pass(self, rung, self.rows, self.shared, grad, with_error)
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


# ------------------------------------------------------------ case runners
def fast_cases() -> dict[str, Any]:
    """The case runners of the fast mode, with the options in force; cases without a fast path run exactly."""
    opts = current_options()
    return {**CASES, "worst": functools.partial(fast_worst, opts=opts),
            "average": functools.partial(fast_average, opts=opts)}


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def _plan_for(probe: Probe, opts: FastOptions, n_batches: int, n_draws: int) -> Plan:
    space = probe.space
    return plan(opts, space.w0.device, space.w0.dtype, _has_conv(probe.objective.model), n_batches, n_draws)


def fast_worst(probe: Probe, batches: list[Batch], clean: Clean, spec: Spec, generator: torch.Generator, *,
               opts: FastOptions) -> Summary:
    """Auto-PGD on stacks of m-batches in the search precision, then each best point re-evaluated exactly."""
    if spec.geometry != "flat":  # the functional passes write flat points: no Christoffel correction
        summary = CASES["worst"](probe, batches, clean, spec, generator)
        summary.details["fast"] = {"path": "exact: the geodesic search has no fast path", "precision": "exact",
                                   "compile": "off", "fallbacks": []}
        return summary
    p = _plan_for(probe, opts, len(batches), spec.n_iters)
    with_error = all(e is not None for _, e in clean)
    found: list[Best] = []
    paths, notes = [], []
    for group in stack_groups(batches, p.stack or memory_stack(probe, batches, p, grad=True)):
        rows = len(group)
        stacked = stack_batches([batches[i] for i in group]) if rows > 1 else batches[group[0]]
        search = StackedProbe(probe, rows, False, ladder(p.precision, p.compile, rows), compile_forward=False)
        try:
            best = worst_case(search, stacked, spec, generator, with_error)
        finally:
            probe.n_forward += search.n_forward
            probe.n_backward += search.n_backward
        paths.append(search.path)
        notes += search.notes
        for r, i in enumerate(group):
            u = best.u[r].clone()
            if p.precision == "fp32":  # the search's own losses are already in the model's dtype
                found.append(Best(best.loss[r, 0], u, None if best.error is None else best.error[r, 0]))
            else:  # the reported loss: the exact probe at the point found (feasible by construction)
                loss, error = probe.value(u, batches[i], with_error)
                found.append(Best(loss, u, error))
    summary = worst_summary(found, clean, spec)
    then = "" if p.precision == "fp32" else ", then every best point re-evaluated in the model's dtype"
    summary.details["fast"] = _details(p, paths, notes, "search in {}" + then)
    return summary


def fast_average(probe: Probe, batches: list[Batch], clean: Clean, spec: Spec, generator: torch.Generator, *,
                 opts: FastOptions) -> Summary:
    """The exact mode's draws, evaluated several per pass in the model's dtype."""
    p = _plan_for(probe, opts, len(batches), spec.n_iters)
    p = dataclasses.replace(p, precision="fp32")
    size = p.draws or 1
    samples: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    paths, notes = [], []
    evaluators: dict[int, StackedProbe] = {}
    try:
        for batch, (_, clean_error) in zip(batches, clean):
            with_error = clean_error is not None
            losses = torch.empty(spec.n_iters, dtype=torch.float64, device=probe.space.w0.device)
            errors = torch.empty_like(losses) if with_error else None
            points = draws(spec, probe.space.w0, generator)
            start = 0
            for n in chunks(spec.n_iters, size):
                ev = evaluators.get(n)
                if ev is None:
                    ev = evaluators[n] = StackedProbe(probe, n, True, ladder(p.precision, p.compile, n),
                                                      compile_forward=True)
                u = torch.stack([next(points) for _ in range(n)])
                loss, error = ev.value(u, batch, with_error)
                losses[start:start + n] = loss.view(-1)
                if errors is not None and error is not None:
                    errors[start:start + n] = error.view(-1)
                start += n
            samples.append((losses, errors))
    finally:
        for ev in evaluators.values():
            probe.n_forward += ev.n_forward
            paths.append(ev.path)
            notes += ev.notes
    summary = average_summary(samples, clean, spec)
    summary.details["fast"] = _details(p, paths, notes, "draws evaluated in {}")
    return summary


def _details(p: Plan, paths: list[str], notes: list[str], template: str) -> dict[str, Any]:
    unique = list(dict.fromkeys(paths))
    return {"path": template.format("; ".join(unique)), "precision": p.precision, "compile": p.compile,
            "fallbacks": list(dict.fromkeys(notes))}


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


# --------------------------------------------------------------- memory
def saved_bytes(fn: Callable[[], Any], precision: str) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``fn()`` (activations, weight copies)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            arithmetic("bf16" if precision == "bf16" else "none", torch.device("cpu")):
        fn()
    return sum(seen.values())


def saved_bytes_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> int:
    """:func:`saved_bytes` of the cross-entropy of ``model`` on ``(x, y)``."""
    return saved_bytes(lambda: F.cross_entropy(model(x), y), precision)


def row_bytes(probe: Probe, batch: Batch, precision: str) -> float:
    """Estimated device bytes of one row of a stacked pass on ``batch``: activations scale with its size.

    Saved bytes are measured on one and two examples: the difference is the cost of an example,
    the rest (weight copies) is paid once per row; the search's flat vectors add
    ``FLAT_VECTORS`` copies of the parameters.
    """
    probe.space.set(probe.space.zeros())
    one, two = (saved_bytes(functools.partial(probe.objective, _head(batch, n), False), precision) for n in (1, 2))
    per_example = max(two - one, 0)
    fixed = one - per_example
    return estimate_bytes(probe.space.numel, per_example, fixed, len(batch), 1) - 4 * probe.space.numel


def _head(batch: Batch, n: int) -> Batch:
    return Batch(tuple(a[:n] for a in batch.args), {k: v[:n] for k, v in batch.kwargs.items()}, batch.target[:n])


def memory_stack(probe: Probe, batches: list[Batch], p: Plan, grad: bool) -> int:
    """How many m-batches fit in one pass within ``memory_fraction`` of the free device memory."""
    device = probe.space.w0.device
    if device.type != "cuda" or not grad:
        return len(batches)
    free, _ = torch.cuda.mem_get_info(device)
    per_row = row_bytes(probe, batches[0], p.precision)
    fit = max(1, int(p.memory_fraction * free // per_row))
    return divisor_at_most(len(batches), fit)


def estimate_bytes(n_params: int, activation_bytes_per_example: float, weight_copy_bytes: float, m: int,
                   rows: int) -> float:
    """Device bytes of a stacked fast-mode search: ``rows`` m-batches of ``m`` examples at once.

    The model itself (``4 n_params``), then per row the flat vectors of the search
    (``FLAT_VECTORS * 4 n_params``), the weight copies the pass saves and ``m`` examples' activations.

    >>> round(estimate_bytes(86_000_000, 10e6, 2 * 86e6, m=256, rows=1) / 1e9, 3)  # 0.344 + 4.128 + 0.172 + 2.56
    7.204
    """
    per_row = FLAT_VECTORS * 4 * n_params + weight_copy_bytes + m * activation_bytes_per_example
    return 4 * n_params + rows * per_row
