r"""The eigen case: :math:`\lambda_{max}(D H D)` of each m-batch, by Lanczos (:mod:`sharpness.curvature`).

Near a minimum :math:`S_{max}(\ell_2) \approx \rho^2/2 \cdot \lambda_{max}(DHD)`. The standard error is
over m-batches; ``Result.details`` records each m-batch's residual bound and whether Lanczos converged.
Hessian-vector products are taken exactly, in every mode.
"""

from __future__ import annotations

import math

import torch

from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Summary, batch_stderr
from sharpness.cases.trace import EXACTLY, methods_used
from sharpness.curvature import LADDERS, HessianOperator, lanczos


def run(ctx: Context) -> Summary:
    """``lambda_max(D H D)`` of each m-batch by Lanczos; the standard error is over m-batches."""
    space = ctx.space
    tol = math.sqrt(torch.finfo(space.w0.dtype).eps)
    found, used = [], []
    methods = LADDERS[ctx.spec.hvp]
    for batch in ctx.batches:
        op = HessianOperator(ctx.probe, space, batch, methods)
        v0 = torch.randn(space.numel, generator=ctx.generator, device=space.w0.device, dtype=space.w0.dtype)
        found.append(lanczos(op, v0.mul_(space.active), ctx.spec.n_iters, tol))
        methods = op.methods
        used.append(methods[0])
    per_batch = [e.value for e in found]
    details = {
        "hvp": methods_used(used),
        "method": "lanczos",
        "residual": [e.residual for e in found],
        "iterations": [e.iterations for e in found],
        "converged": all(e.converged for e in found),
    }
    return Summary(per_batch, None, batch_stderr(per_batch, summation="rational"), None, details)


CASE = Case("eigen", run, runs_exactly=EXACTLY)
