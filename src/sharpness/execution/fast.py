"""The fast mode: the same searches and draws as the exact mode, in cheaper passes.

``measure(..., mode="fast")`` changes how a measurement executes, never what it measures:

* **Reduced-precision search.** Auto-PGD takes its passes with the operands of every matrix product,
  convolution and attention rounded to TF32 (the default on CUDA: TF32 tensor cores) or bfloat16
  (opt-in; :mod:`sharpness.execution.precision`); everything else stays in float32. A search only has
  to find a good feasible point: the best point of each m-batch is then re-evaluated in the model's
  own dtype by the exact probe, so the reported loss is the exact loss at a feasible point (a lower
  bound on the maximum, as in the exact mode). Radii, feasibility and restoration are the exact
  mode's: the same Auto-PGD code and projections run, on points stacked in rows. The price is a
  slightly different trajectory: on small networks trained on digits, TF32 searches stay within 1%
  of the exact values (the largest gap seen: 0.6%, the CNN's L2 search), bfloat16 searches fall up
  to about 2% short (``tests/bench/test_fast.py``).
* **More work per launch.** Several m-batches are searched in one pass (the functional engine,
  :mod:`sharpness.execution.functional`: ``vmap`` over stacked perturbed weights), and draws are
  evaluated several per pass, in chunks. Draws have no search: they are evaluated in the model's
  dtype, and they are the exact mode's draws in the same order.
* **Captured passes.** ``torch.compile`` of the pass (optionally with CUDA graphs).

Every case built from :meth:`search` and :meth:`sample` gets all of this, in whatever coordinates its
probe has: flat normalised weights take the functional engine, other coordinates (a random subspace,
another scale vector) the module engine, which writes each row's point into the model. Coordinates
that say they must run exactly (``runs_exactly``: the geodesic chart) are searched by the exact mode,
and ``Result.mode`` then says ``exact``.

Which of these pay depends on the device and the model, so the defaults are chosen per device
(:func:`~sharpness.execution.options.plan`); :func:`~sharpness.execution.options.options` overrides
them for a block. Every configuration falls back cleanly (:mod:`sharpness.execution.ladder`), and
``Result.details["fast"]`` names the path that ran and the fallbacks taken.

On the CPU the defaults keep the exact mode's arithmetic and one m-batch per pass: there reduced
precision is emulated (slow), ``vmap`` over weights turns convolutions into slower grouped ones, and
compiling costs minutes; the fast mode there is the exact computation plus one re-evaluation per
m-batch. Every GPU-side path runs on the CPU when asked for
(``options(precision="tf32", stack=2, draws=4, compile="trace")``), which is how it is tested.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sharpness.average_case import Draws, addressed_of, draws
from sharpness.execution.exact import ExactExecutor
from sharpness.execution.ladder import Rung, ladder
from sharpness.execution.memory import memory_stack
from sharpness.execution.options import FastOptions, Plan, chunks, current_options, plan
from sharpness.execution.stacked import StackedProbe, stack_batches, stack_groups
from sharpness.modes import Mode
from sharpness.objective import Batch
from sharpness.space import Probe
from sharpness.worst_case import Best, Search, worst_case

SEARCH = "search in {}"
REEVALUATED = ", then every best point re-evaluated in the model's dtype"
DRAWS = "draws evaluated in {}"


@dataclass
class _Ran:
    """Stacked probes that ran under one plan, and how their paths are described."""

    template: str
    plan: Plan
    probes: list[StackedProbe]


class FastExecutor:
    """:class:`~sharpness.execution.executor.Executor` of the fast mode, with the options in force when made."""

    def __init__(self, opts: FastOptions | None = None) -> None:
        self.opts = opts or current_options()
        self._ran: list[_Ran] = []
        self._exactly: list[str] = []
        self._exact = ExactExecutor()
        # Draws of consecutive m-batches on one probe reuse their stacked probes (and compiled passes).
        self._sampling: tuple[Probe, _Ran, dict[int, StackedProbe]] | None = None

    # ---------------------------------------------------------------- primitives
    def search(self, probe: Probe, batches: Sequence[Batch], spec: Search, generator: torch.Generator,
               with_error: Sequence[bool]) -> list[Best]:
        """Auto-PGD on stacks of m-batches in the search precision, then each best point re-evaluated exactly."""
        reason = probe.space.runs_exactly
        if reason is not None:
            self.exactly(reason)
            return self._exact.search(probe, batches, spec, generator, with_error)
        p = self._plan(probe, len(batches), spec.n_iters)
        errors = all(with_error)
        ran = _Ran(SEARCH + ("" if p.precision == "fp32" else REEVALUATED), p, [])
        self._ran.append(ran)
        found: list[Best] = []
        for group in stack_groups(list(batches), p.stack or memory_stack(probe, list(batches), p, grad=True)):
            rows = len(group)
            stacked = stack_batches([batches[i] for i in group]) if rows > 1 else batches[group[0]]
            searcher = StackedProbe(probe, rows, False, self._rungs(probe, p, rows), compile_forward=False)
            ran.probes.append(searcher)
            best = worst_case(searcher, stacked, spec, generator, errors)
            found += [self._reevaluated(probe, best, r, batches[i], p, errors) for r, i in enumerate(group)]
        return found

    def sample(self, probe: Probe, batch: Batch, spec: Draws, generator: torch.Generator,
               with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The exact mode's draws, evaluated several per pass in the model's dtype."""
        reason = probe.space.runs_exactly
        if reason is not None:
            self.exactly(reason)
            return self._exact.sample(probe, batch, spec, generator, with_error)
        ran, evaluators = self._evaluators(probe, spec.n_iters)
        p = ran.plan
        losses = torch.empty(spec.n_iters, dtype=torch.float64, device=probe.space.w0.device)
        errors = torch.empty_like(losses) if with_error else None
        points = draws(spec, probe.space.w0, generator, addressed=addressed_of(probe.space))
        start = 0
        for n in chunks(spec.n_iters, p.draws or 1):
            ev = evaluators.get(n)
            if ev is None:
                ev = evaluators[n] = StackedProbe(probe, n, True, self._rungs(probe, p, n), compile_forward=True)
                ran.probes.append(ev)
            u = torch.stack([next(points) for _ in range(n)])
            loss, error = ev.value(u, batch, with_error)
            losses[start:start + n] = loss.view(-1)
            if errors is not None and error is not None:
                errors[start:start + n] = error.view(-1)
            start += n
        return losses, errors

    def exactly(self, reason: str) -> None:
        self._exactly.append(reason)

    def report(self) -> tuple[Mode, dict[str, Any]]:
        """``fast`` with the paths that ran, or ``exact`` with the reasons, when nothing ran fast."""
        if not self._ran:
            reasons = "; ".join(dict.fromkeys(self._exactly))
            if not reasons:
                return "exact", {}
            return "exact", {"fast": {"path": f"exact: {reasons}", "precision": "exact", "compile": "off",
                                      "fallbacks": []}}
        parts: dict[str, list[str]] = {}
        for ran in self._ran:
            parts.setdefault(ran.template, []).extend(s.path for s in ran.probes)
        paths = [template.format("; ".join(dict.fromkeys(found))) for template, found in parts.items()]
        paths += [f"exact: {r}" for r in dict.fromkeys(self._exactly)]
        notes = [note for ran in self._ran for s in ran.probes for note in s.notes]
        first = self._ran[0].plan
        return "fast", {"fast": {"path": "; ".join(paths), "precision": first.precision, "compile": first.compile,
                                 "fallbacks": list(dict.fromkeys(notes))}}

    # ---------------------------------------------------------------- helpers
    def _plan(self, probe: Probe, n_batches: int, n_draws: int) -> Plan:
        space = probe.space
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in probe.objective.model.modules())
        return plan(self.opts, space.w0.device, space.w0.dtype, has_conv, n_batches, n_draws)

    @staticmethod
    def _rungs(probe: Probe, p: Plan, rows: int) -> list[Rung]:
        """The ladder of the plan; coordinates that are not flat weights only take the module engine."""
        return [r for r in ladder(p.precision, p.compile, rows) if probe.space.flat or r.engine == "module"]

    def _evaluators(self, probe: Probe, n_draws: int) -> tuple[_Ran, dict[int, StackedProbe]]:
        if self._sampling is None or self._sampling[0] is not probe:
            # Draws have no search: they are evaluated in the model's dtype.
            p = dataclasses.replace(self._plan(probe, 1, n_draws), precision="fp32")
            ran = _Ran(DRAWS, p, [])
            self._ran.append(ran)
            self._sampling = (probe, ran, {})
        return self._sampling[1], self._sampling[2]

    @staticmethod
    def _reevaluated(probe: Probe, best: Best, row: int, batch: Batch, p: Plan, with_error: bool) -> Best:
        """Row ``row`` of a stacked search's best point, its loss and error in the model's dtype."""
        u = best.u[row].clone()
        if p.precision == "fp32":  # the search's own losses are already in the model's dtype
            return Best(best.loss[row, 0], u, None if best.error is None else best.error[row, 0])
        loss, error = probe.value(u, batch, with_error)  # the exact probe at the point found: feasible
        return Best(loss, u, error)
