r"""PAC-Bayes flatness of Jiang et al. (2020): the largest perturbation scale that a model tolerates.

For one m-batch, :math:`\sigma^*` is the largest :math:`\sigma` whose perturbation raises the target (the
0-1 error, Jiang's choice, or the loss) by at most :math:`d` = ``rho`` (their 0.1); the value is
:math:`1/\sigma^{*2}`, the mean over m-batches.

* ``l2`` (``pacbayes.flatness``): the expected rise under :math:`\delta_i \sim N(0, \sigma^2 c_{0,i}^2 + \eta^2)`,
  from ``n_iters`` draws (antithetic pairs if asked); :math:`c_0` is the scale of ``scaling`` without
  :math:`\eta` (1, :math:`|w|` or the filter norm), so ``elementwise`` with :math:`\eta = 10^{-3}` is
  Jiang's magnitude-aware ``pacbayes.mag.flatness``.
* ``linf`` (``sharpness.flatness``): the rise at the Auto-PGD maximiser of the loss over the box
  :math:`|\delta_i| \le \sigma c_{0,i} + \eta` (error target: the error at that point).

The search doubles or halves :math:`\sigma` from 0.05 until the rise crosses :math:`d`, then bisects
:math:`\log \sigma` to a relative width of ``2**(1/1024)`` and keeps the lower end (a rise at most ``d``).
Every trial scale of an m-batch reuses the same random numbers (draws, restarts), so the estimated rise
is a fixed function of :math:`\sigma` and the bisection is well defined. The Monte-Carlo error is
carried by the delta method: with :math:`s_d` the standard error of the rise at :math:`\sigma^*` and
:math:`r'` its slope (a secant over :math:`\sigma^* \cdot 1.25^{\pm 1}`),
:math:`\mathrm{se}(\sigma^*) = s_d / r'` and :math:`\mathrm{se}(1/\sigma^{*2}) = 2\,\mathrm{se}(\sigma^*)/\sigma^{*3}`.

Every trial runs its draws or its search through the mode's executor, in coordinates of its own: the
measurement's weights with the trial's scale vector. In the fast mode the box searches run in reduced
precision (each best point re-evaluated in the model's dtype) and the draws several per pass.

>>> sigma = largest_scale(lambda s: s * s, target=0.25)
>>> round(sigma, 3), sigma**2 <= 0.25
(0.5, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sharpness.average_case import monte_carlo_variance
from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Summary, batch_stderr, monte_carlo_stderr
from sharpness.errors import SharpnessError
from sharpness.execution.executor import Executor
from sharpness.objective import Batch
from sharpness.scaling import filter_dims, scale_of
from sharpness.space import Probe, WeightSpace
from sharpness.spec import Init, Norm, Scaling, Spec

START = 0.05
MAX_DOUBLINGS = 64
BISECTIONS = 10
SECANT = 1.25


@dataclass(frozen=True)
class Trial:
    """The rise of the target at one scale, its Monte-Carlo standard error, and the rise of the 0-1 error."""

    rise: float
    stderr: float
    error_rise: float | None


def largest_scale(rise: Callable[[float], float], target: float, start: float = START) -> float:
    """Largest scale with ``rise(scale) <= target``: bracket by doubling or halving, then bisect ``log(scale)``."""
    lo, hi = _bracket(rise, target, start)
    for _ in range(BISECTIONS):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if rise(mid) <= target else (lo, mid)
    return lo


def _bracket(rise: Callable[[float], float], target: float, start: float) -> tuple[float, float]:
    scale = start
    below = rise(scale) <= target
    for _ in range(MAX_DOUBLINGS):
        step = scale * 2 if below else scale / 2
        if (rise(step) <= target) != below:
            return (scale, step) if below else (step, scale)
        scale = step
    raise SharpnessError(
        f"pacbayes: the rise stays {'below' if below else 'above'} rho={target} from sigma={start} to "
        f"sigma={scale:.3g}; {'the target cannot be reached' if below else 'is eta too large?'}"
    )


def base_scale(space: WeightSpace, model: torch.nn.Module, scaling: Scaling) -> torch.Tensor:
    """``c0``: the scale of ``scaling`` without ``eta``, at the unperturbed weights."""
    names = {id(p): n for n, p in model.named_parameters()}
    dims = filter_dims(model)
    return torch.cat([
        scale_of(w.view_as(p), scaling, 0.0, dims.get(names.get(id(p), ""), 0)).reshape(-1)
        for w, p in zip(space.w0.split(space.numels), space.params)
    ])


@dataclass(frozen=True)
class Noise:
    """The draws of one trial: ``n_iters`` points of ``N(0, I)`` in the trial's coordinates."""

    n_iters: int
    antithetic: bool
    norm: Norm = "l2"
    rho: float = 1.0


@dataclass(frozen=True)
class Box:
    """The search of one trial: Auto-PGD over the unit box of the trial's coordinates scaled by ``rho``."""

    rho: float
    n_iters: int
    n_restarts: int
    init: Init
    norm: Norm = "linf"


@dataclass(frozen=True)
class Trials:
    """What every trial of one m-batch shares: the mode, the weights, the m-batch and its random numbers."""

    executor: Executor
    probe: Probe
    space: WeightSpace
    batch: Batch
    spec: Spec
    c0: torch.Tensor
    seed: int
    clean: tuple[float, float | None]

    def at(self, scale: float) -> Trial:
        """The rise at ``scale``, with the random numbers of ``seed``."""
        spec, loss0, err0 = self.spec, *self.clean
        generator = torch.Generator(device=self.c0.device).manual_seed(self.seed)
        # (rise, variance of its estimate) of the loss and of the 0-1 error.
        loss: tuple[float, float]
        error: tuple[float, float] | None = None
        if spec.norm == "l2":
            probe = self.probe.derived(self.space.rescaled((self.c0.square() * scale**2 + spec.eta**2).sqrt()))
            noise = Noise(spec.n_iters, spec.antithetic)
            losses, errors = self.executor.sample(probe, self.batch, noise, generator, err0 is not None)
            loss = _mean_and_variance(losses - loss0, spec.antithetic)
            if errors is not None and err0 is not None:
                error = _mean_and_variance(errors - err0, spec.antithetic)
        else:
            probe = self.probe.derived(self.space.rescaled(self.c0 + spec.eta / scale))
            box = Box(scale, spec.n_iters, spec.n_restarts, spec.init)
            best = self.executor.search(probe, [self.batch], box, generator, [err0 is not None])[0]
            # The unperturbed point is in the box: a search that never beat it reports it.
            raised = float(best.loss) > loss0
            loss = (float(best.loss) - loss0 if raised else 0.0, 0.0)
            if best.error is not None and err0 is not None:
                error = (float(best.error) - err0 if raised else 0.0, 0.0)
        chosen = loss if spec.target == "loss" or error is None else error
        return Trial(chosen[0], math.sqrt(chosen[1]), None if error is None else error[0])


def _mean_and_variance(values: torch.Tensor, antithetic: bool) -> tuple[float, float]:
    return float(values.mean()), float(monte_carlo_variance(values, antithetic))


def search(trials: Trials) -> tuple[float, Trial, float]:
    """``sigma*`` of one m-batch, the trial there, and the Monte-Carlo variance of ``1 / sigma*^2``."""
    at = functools.lru_cache(maxsize=None)(trials.at)
    sigma = largest_scale(lambda s: at(s).rise, trials.spec.rho)
    if trials.spec.norm == "linf":
        return sigma, at(sigma), 0.0
    slope = (at(sigma * SECANT).rise - at(sigma / SECANT).rise) / (sigma * (SECANT - 1 / SECANT))
    se_sigma = at(sigma).stderr / slope if slope > 0 else math.nan
    return sigma, at(sigma), (2 * se_sigma / sigma**3) ** 2


def run(ctx: Context) -> Summary:
    """``1 / sigma*^2`` of each m-batch; the standard error carries the Monte-Carlo error (``l2``)."""
    spec = ctx.spec
    if spec.target == "error" and any(e is None for _, e in ctx.clean):
        raise SharpnessError(
            "pacbayes: target='error' needs classifier outputs ((N, K >= 2) logits, integer targets); "
            "use target=loss"
        )
    c0 = base_scale(ctx.space, ctx.probe.objective.model, spec.scaling)
    found = []
    for batch, point in zip(ctx.batches, ctx.clean):
        seed = int(torch.randint(2**62, (), generator=ctx.generator, device=c0.device))
        found.append(search(Trials(ctx.executor, ctx.probe, ctx.space, batch, spec, c0, seed, point)))
    per_batch = [1 / sigma**2 for sigma, _, _ in found]
    if spec.norm == "l2":
        stderr = monte_carlo_stderr([var for _, _, var in found])
    else:
        stderr = batch_stderr(per_batch, summation="rational")
    errors = [t.error_rise for _, t, _ in found]
    details = {
        "sigma": [sigma for sigma, _, _ in found],
        "rise": [t.rise for _, t, _ in found],
        "target": spec.target,
        "noise": "gaussian" if spec.norm == "l2" else "box",
    }
    error_increase = None if None in errors else [e for e in errors if e is not None]
    return Summary(per_batch, error_increase, stderr, None, details)


CASE = Case("pacbayes", run)
