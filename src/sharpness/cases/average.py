r"""The average case: :math:`\mathbb E_u[L_S(w + c \odot u)] - L_S(w)`, averaged over m-batches.

``n_iters`` draws per m-batch (:mod:`sharpness.average_case`), evaluated by the mode's executor; the
standard error is Monte-Carlo, over draws (pair means when antithetic) and m-batches.
"""

from __future__ import annotations

import torch

from sharpness.average_case import ADDRESSED, SEQUENTIAL, monte_carlo_variance
from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Clean, Summary, monte_carlo_stderr
from sharpness.spec import Spec


def run(ctx: Context) -> Summary:
    """The mean loss (and error) increase over the draws of each m-batch."""
    # An m-batch's loss cannot depend on embedding rows it never reads, so each m-batch draws only the
    # rows it reads, in the stream that gives them the numbers a whole draw would (stream 2).
    samples = ctx.over_reach(lambda probe, batches, with_error: [
        ctx.executor.sample(probe, b, ctx.spec, ctx.generator, e) for b, e in zip(batches, with_error)],
        restrict=True)
    out = summary(samples, ctx.clean, ctx.spec.antithetic)
    out.details["draw_stream"] = ADDRESSED if ctx.by_rows else SEQUENTIAL
    return out


def summary(samples: list[tuple[torch.Tensor, torch.Tensor | None]], clean: Clean, antithetic: bool) -> Summary:
    """Mean increases and their Monte-Carlo error from the losses (and errors) drawn on each m-batch."""
    per_batch, errors, variances = [], [], []
    for (losses, errs), (clean_loss, clean_error) in zip(samples, clean):
        per_batch.append(float(losses.mean()) - clean_loss)
        variances.append(float(monte_carlo_variance(losses, antithetic)))
        if errs is not None and clean_error is not None:
            errors.append(float(errs.mean()) - clean_error)
    return Summary(per_batch, errors if errors else None, monte_carlo_stderr(variances), None)


def _passes(spec: Spec) -> int:
    return spec.n_iters + 1


CASE = Case("average", run, passes_per_batch=_passes)
