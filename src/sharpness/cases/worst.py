r"""The worst case: :math:`\max_{\|u\|_p \le \rho} L_S(w + c \odot u) - L_S(w)`, averaged over m-batches.

The search is Auto-PGD (:mod:`sharpness.worst_case`) in the measurement's coordinates, run by the mode's
executor; the reported point of each m-batch is the best one found (a lower bound on the maximum), and
the clean point when no search beat it. The standard error is over m-batches; the radius is the largest
norm of a reported point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Clean, Summary, batch_stderr
from sharpness.spec import Spec
from sharpness.worst_case import Best


def run(ctx: Context) -> Summary:
    """The best point of each m-batch, its loss and error increases."""
    spec = ctx.spec
    # From u = 0 a search never moves an unreached embedding row, so leaving those out changes no iterate;
    # random starts would draw other numbers, so they keep every coordinate.
    found = ctx.over_reach(lambda probe, batches, with_error: ctx.executor.search(
        probe, batches, spec, ctx.generator, with_error), restrict=spec.init == "zero" and spec.n_restarts == 1)
    return summary(found, ctx.clean, ctx.probe.space.ball(ctx.spec).norm)


def summary(found: list[Best], clean: Clean, norm: Callable[[torch.Tensor], torch.Tensor]) -> Summary:
    """Per-batch loss and error increases of the best points found, one per m-batch; ``norm`` gives the radius."""
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
    return Summary(per_batch, error_increase, batch_stderr(per_batch), radius)


def _passes(spec: Spec) -> int:
    return (spec.n_iters + 1) * spec.n_restarts + 1


CASE = Case("worst", run, passes_per_batch=_passes)
