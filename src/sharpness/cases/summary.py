r"""What every case reports, and the statistics they share.

A case turns per-m-batch values into a :class:`Summary`; :func:`~sharpness.measure.measure` turns that
into a :class:`~sharpness.measure.Result`. The value is the mean over m-batches :math:`\bar v`; its
standard error is either over m-batches (:func:`batch_stderr`, :math:`s / \sqrt n` with the sample
standard deviation :math:`s`) or Monte-Carlo (:func:`monte_carlo_stderr`, from the variance of each
m-batch's estimate).

>>> batch_stderr([1.0, 3.0])
1.0
>>> batch_stderr([1.0, 3.0], summation="rational")
1.0
>>> monte_carlo_stderr([4.0, 0.0])
1.0
>>> batch_stderr([2.0]) is None and monte_carlo_stderr([float("nan")]) is None
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# The unperturbed (loss, 0-1 error or None) of each m-batch.
Clean = list[tuple[float, float | None]]


@dataclass
class Summary:
    """What a case returns: per-batch values and the statistics ``Result`` reports."""

    per_batch: list[float]
    error_increase: list[float] | None
    stderr: float | None
    radius: float | None
    details: dict[str, Any] = field(default_factory=dict)


def mean(values: Sequence[float]) -> float:
    """The mean, summed exactly (``math.fsum``)."""
    return math.fsum(values) / len(values)


def batch_stderr(values: Sequence[float], summation: Literal["fsum", "rational"] = "fsum") -> float | None:
    r"""Standard error of the mean over m-batches, :math:`\sqrt{\sum_i (v_i - \bar v)^2 / ((n - 1)\, n)}`,
    ``None`` for one m-batch.

    Two summation orders compute it, exact up to the last rounding and different only there: ``fsum``
    (the worst and average cases) sums squared deviations with ``math.fsum``, ``rational`` (the curvature
    and classic cases) is :func:`statistics.stdev` (exact rational arithmetic, then one rounding). Each case keeps the
    one it was written with, so that the standard errors it reports, and those stored in studies, stay the
    same bit for bit; merging them would change the last bit of some.
    """
    n = len(values)
    if n < 2:
        return None
    if summation == "rational":
        return statistics.stdev(values) / math.sqrt(n)
    centre = mean(values)
    return math.sqrt(math.fsum((v - centre) ** 2 for v in values) / (n - 1) / n)


def monte_carlo_stderr(variances: Sequence[float]) -> float | None:
    """Standard error of the mean over m-batches of estimates with these variances (``None`` if unknown)."""
    stderr = math.sqrt(sum(variances)) / len(variances)
    return None if math.isnan(stderr) else stderr
