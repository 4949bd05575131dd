r"""The trace case: :math:`\mathrm{tr}(D H D)` of each m-batch, by Hutchinson or Hutch++ (:mod:`sharpness.curvature`).

Near a minimum :math:`S_{avg}(\ell_2) \approx \rho^2/2 \cdot \mathrm{tr}(DHD)`. The standard error is
Monte-Carlo. Hessian-vector products are taken exactly at the unperturbed weights, in the model's dtype,
in every mode.
"""

from __future__ import annotations

from collections.abc import Sequence

from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Summary, monte_carlo_stderr
from sharpness.curvature import LADDERS, HessianOperator, hutch_plus_plus, hutchinson

# Why no fast path: a Hessian-vector product is a double backward at one point, nothing to stack or round.
EXACTLY = "Hessian-vector products have no fast path"


def methods_used(used: Sequence[str]) -> str:
    """The Hessian-vector product methods that ran, as ``Result.details["hvp"]`` names them."""
    return ",".join(sorted(set(used)))


def run(ctx: Context) -> Summary:
    """``tr(D H D)`` of each m-batch by Hutchinson or Hutch++; the standard error is Monte-Carlo."""
    spec, space = ctx.spec, ctx.space
    per_batch, variances, used = [], [], []
    methods = LADDERS[spec.hvp]
    for batch in ctx.batches:
        op = HessianOperator(ctx.probe, space, batch, methods)
        estimate = hutch_plus_plus if spec.estimator == "hutchpp" else hutchinson
        mean, var = estimate(op, space.active, spec.n_iters, ctx.generator, space.w0.dtype)
        methods = op.methods  # later m-batches start from what worked
        per_batch.append(mean)
        variances.append(var)
        used.append(methods[0])
    details = {"hvp": methods_used(used), "estimator": spec.estimator, "n_products": spec.n_iters}
    return Summary(per_batch, None, monte_carlo_stderr(variances), None, details)


CASE = Case("trace", run, runs_exactly=EXACTLY)
