"""Rank statistics: does a measure order models the way their generalization does?

Every function works on a *table* with one row per model (a pandas DataFrame): a measure column
(e.g. the sharpness under one definition), a target column (test error, an OOD error, the
generalization gap, or a hyper-parameter such as the learning rate) and the hyper-parameter columns
("axes") that the zoo varies. :func:`per_model` builds such a table from a study's long table.

* :func:`kendall_tau`: Kendall's τ-b over all models (ties handled).
* :func:`granulated_kendall`: Jiang et al. (2020)'s granulated coefficient Ψ, which only compares
  models that differ in one hyper-parameter.
* :func:`conditional_mutual_information`: Jiang et al. (2020)'s normalised conditional mutual
  information between the signs of pairwise differences, minimised over conditioning sets.
* :func:`sign_error`: Dziugaite et al. (2020)'s sign-error over environments of coupled models.
* :func:`bootstrap_ci`: percentile bootstrap interval of any of these, resampling models.
* :func:`permutation_null`: how many |τ| of a given size a whole table of measures × targets would
  show by chance alone (multiple comparisons), by permuting the models' targets.

Rows whose measure or target is missing (NaN: a failed measurement) are left out of each statistic.
A statistic that is undefined (fewer than two distinct values) is NaN, never an error.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sharpness.errors import SharpnessError

if TYPE_CHECKING:
    import pandas as pd

#: Column added by :func:`per_model`: generalization gap ``metric.test_err - metric.train_err``.
GAP = "gap"
_TEST, _TRAIN = "metric.test_err", "metric.train_err"
_REPLICATE_AXES = ("hp.seed",)  # replicates, not hyper-parameters: never an axis or a target


# ------------------------------------------------------------------ tau-b
def kendall_tau(a: Sequence[float] | Any, b: Sequence[float] | Any) -> float:
    """Kendall's τ-b between two equally long sequences (``scipy.stats.kendalltau``).

    With ``P`` concordant pairs, ``Q`` discordant pairs, and ``T_a`` (``T_b``) pairs tied in ``a``
    only (``b`` only),

        τ_b = (P - Q) / sqrt((P + Q + T_a) (P + Q + T_b)).

    Pairs with a NaN on either side are dropped; NaN when fewer than two pairs remain or either
    side is constant.

    >>> kendall_tau([1, 2, 3], [10, 20, 30]), kendall_tau([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    >>> round(kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]), 12)  # P=4, Q=0, T_a=T_b=1: 4/5
    0.8
    >>> kendall_tau([1, 1, 1], [1, 2, 3])
    nan
    """
    x, y = _floats(a, "a"), _floats(b, "b")
    if x.shape != y.shape:
        raise SharpnessError(f"kendall_tau needs sequences of equal length, got {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    if len(x) > PAIRWISE_MAX:
        from scipy.stats import kendalltau

        return float(kendalltau(x, y, variant="b").statistic)
    return _tau_b_pairwise(x, y)


# Up to this many models τ is counted over the n × n pair matrix (a bootstrap or a permutation null calls it
# tens of thousands of times on tables of tens of models, where scipy's per-call overhead is most of the cost);
# above it, scipy's O(n log n) count.
PAIRWISE_MAX = 2048


def _tau_b_pairwise(x: np.ndarray, y: np.ndarray) -> float:
    """τ-b from the signs of all pairwise differences, with scipy's arithmetic on the exact integer counts.

    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    >>> from scipy.stats import kendalltau
    >>> bool(_tau_b_pairwise(x, y) == kendalltau(x, y).statistic)
    True
    """
    sx, sy = np.sign(np.subtract.outer(x, x)), np.sign(np.subtract.outer(y, y))
    n = len(x)
    total = n * (n - 1) // 2
    con_minus_dis = int(np.einsum("ij,ij->", sx, sy)) // 2
    # Off-diagonal zeros are the tied pairs, each counted twice.
    x_ties = (n * n - n - int(np.count_nonzero(sx))) // 2
    y_ties = (n * n - n - int(np.count_nonzero(sy))) // 2
    tau = con_minus_dis / np.sqrt(total - x_ties) / np.sqrt(total - y_ties)
    return float(min(1.0, max(-1.0, tau)))


def correlation_table(table: pd.DataFrame, measures: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """τ-b of every measure (rows) with every target (columns).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"m": [1, 2, 3], "err": [0.1, 0.2, 0.3], "lr": [3, 2, 1]})
    >>> correlation_table(t, ["m"], ["err", "lr"])
         err   lr
    m    1.0 -1.0
    """
    import pandas as pd

    _check_columns(table, [*measures, *targets])
    rows = {m: [kendall_tau(table[m], table[t]) for t in targets] for m in measures}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(targets))


def tau_within(table: pd.DataFrame, measure: str, target: str, by: str) -> pd.DataFrame:
    """τ-b of ``measure`` with ``target`` within each group of models sharing a value of ``by``.

    Pooled over groups, τ can be dominated by what separates them (say, one architecture has
    both higher error and lower sharpness) and say nothing about the order inside any group;
    this is the check. One row per value of ``by`` (in order of appearance), with ``tau`` and
    ``n`` (models with both values finite; τ is NaN below two).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"arch": ["a", "a", "a", "b", "b", "b"],
    ...                   "m": [1, 2, 3, 10, 11, 12], "err": [0.7, 0.8, 0.9, 0.1, 0.2, 0.3]})
    >>> round(kendall_tau(t["m"], t["err"]), 12)  # pooled: b is sharper and better; (6 - 9) / 15
    -0.2
    >>> tau_within(t, "m", "err", "arch")  # within each architecture: sharper is worse
          tau  n
    arch
    a     1.0  3
    b     1.0  3
    """
    _check_columns(table, [measure, target, by])
    table = _hashable(table, [by])
    rows = {
        value: (kendall_tau(g[measure], g[target]), int((g[measure].notna() & g[target].notna()).sum()))
        for value, g in table.groupby(by, dropna=False, sort=False)
    }
    import pandas as pd

    out = pd.DataFrame.from_dict(rows, orient="index", columns=["tau", "n"])
    out.index.name = by
    return out


# ------------------------------------------------------------ granulated
@dataclass(frozen=True)
class GranulatedTau:
    """Jiang et al. (2020)'s granulated Kendall coefficient.

    Attributes:
        psi: Ψ, the mean of ``per_axis`` over the axes where it is defined.
        per_axis: ψ_i for each axis: the mean τ over groups of models that share every other
            axis' value, so that within a group only axis i (and any column that is not an axis,
            such as the seed) varies.
        n_groups: for each axis, the number of groups whose τ is defined (and thus averaged).
    """

    psi: float
    per_axis: dict[str, float]
    n_groups: dict[str, int]


def granulated_kendall(table: pd.DataFrame, measure: str, target: str, axes: Sequence[str]) -> GranulatedTau:
    """Granulated Kendall coefficient Ψ (Jiang et al. 2020, "Fantastic generalization measures").

    For each axis ``i`` with values Θ_i, and ``m_i`` groups of models that agree on all other axes,

        ψ_i = (1 / m_i) Σ_groups τ(measure, target | group),      Ψ = (1 / n) Σ_i ψ_i.

    Groups whose τ is undefined (one model, or a constant measure or target) are skipped, and so
    is an axis without any defined group; ``n_groups`` says how many groups each ψ_i averages.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"lr": [1, 2, 1, 2], "bs": [8, 8, 16, 16],
    ...                   "m": [1, 2, 3, 4], "err": [1, 2, 4, 3]})
    >>> g = granulated_kendall(t, "m", "err", ["lr", "bs"])
    >>> g.per_axis, g.psi  # lr: the two groups disagree (+1, -1); bs: both give +1
    ({'lr': 0.0, 'bs': 1.0}, 0.5)
    """
    _check_columns(table, [measure, target, *axes])
    if not axes:
        raise SharpnessError("granulated_kendall needs at least one axis, got axes=[]")
    table = _hashable(table, axes)
    per_axis, n_groups = {}, {}
    for axis in axes:
        others = [a for a in axes if a != axis]
        groups = [g for _, g in table.groupby(others, dropna=False, sort=False)] if others else [table]
        taus = [t for t in (kendall_tau(g[measure], g[target]) for g in groups) if not math.isnan(t)]
        per_axis[axis] = float(np.mean(taus)) if taus else math.nan
        n_groups[axis] = len(taus)
    defined = [v for v in per_axis.values() if not math.isnan(v)]
    return GranulatedTau(float(np.mean(defined)) if defined else math.nan, per_axis, n_groups)


# ------------------------------------------------------------- sign-error
@dataclass(frozen=True)
class SignError:
    """Dziugaite et al. (2020)'s sign-error of a measure over environments.

    Attributes:
        mean: mean of the environments' errors (each environment weighs the same).
        max: the robust sign-error, the worst environment's error.
        per_axis: mean error over the environments that change each axis (NaN: none).
        environments: one row per environment: ``axis``, the two values ``a`` and ``b`` it takes,
            ``context`` (the other axes' values), ``n_pairs`` (pairs kept) and ``error``.
    """

    mean: float
    max: float
    per_axis: dict[str, float]
    environments: pd.DataFrame


def sign_error(table: pd.DataFrame, measure: str, target: str, axes: Sequence[str], min_diff: float = 0.0) -> SignError:
    """Sign-error (Dziugaite et al. 2020, "In search of robust measures of generalization").

    An *environment* is an unordered pair of grid cells that differ in exactly one axis; its
    coupled pairs are every (model of one cell, model of the other) pair, so replicates such as
    seeds give several pairs. A pair's loss is

        ℓ = ½ (1 - sgn(Δ target) · sgn(Δ measure)),

    0 when the measure orders the pair as the target does, 1 when it orders it the other way and
    ½ when the measure ties. Pairs with ``|Δ target| <= min_diff`` (e.g. within the evaluation's
    Monte-Carlo noise) are dropped, and an environment without pairs is left out. An environment's
    error is its mean loss; :class:`SignError` gives the mean, the worst case and the mean per axis.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"lr": [1, 2, 3], "m": [1, 2, 0], "err": [1, 2, 3]})
    >>> s = sign_error(t, "m", "err", ["lr"])
    >>> s.environments[["a", "b", "error"]].to_dict("split")["data"]
    [[1, 2, 0.0], [1, 3, 1.0], [2, 3, 1.0]]
    >>> round(s.mean, 4), s.max
    (0.6667, 1.0)
    """
    import pandas as pd

    _check_columns(table, [measure, target, *axes])
    if not axes:
        raise SharpnessError("sign_error needs at least one axis, got axes=[]")
    table = _hashable(table, axes).dropna(subset=[measure, target])
    rows = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        groups = table.groupby(others, dropna=False, sort=False) if others else [((), table)]
        for key, group in groups:
            cells = {v: c for v, c in group.groupby(axis, dropna=False, sort=True)}
            for a, b in itertools.combinations(cells, 2):
                error, n_pairs = _pair_loss(cells[a], cells[b], measure, target, min_diff)
                if n_pairs:
                    rows.append((axis, a, b, _context(others, key), n_pairs, error))
    env = pd.DataFrame(rows, columns=["axis", "a", "b", "context", "n_pairs", "error"])
    errors = env["error"].to_numpy(float)
    per_axis = {axis: _mean(env.loc[env["axis"] == axis, "error"]) for axis in axes}
    return SignError(_mean(errors), float(errors.max()) if len(errors) else math.nan, per_axis, env)


def _pair_loss(a: pd.DataFrame, b: pd.DataFrame, measure: str, target: str, min_diff: float) -> tuple[float, int]:
    dg = np.subtract.outer(b[target].to_numpy(float), a[target].to_numpy(float)).ravel()
    dm = np.subtract.outer(b[measure].to_numpy(float), a[measure].to_numpy(float)).ravel()
    keep = np.abs(dg) > min_diff
    loss = 0.5 * (1.0 - np.sign(dg[keep]) * np.sign(dm[keep]))
    return (float(loss.mean()), int(keep.sum())) if keep.any() else (math.nan, 0)


def _context(others: list[str], key: Any) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{name}={value}" for name, value in zip(others, values, strict=True))


# --------------------------------------------------- conditional mutual info
@dataclass(frozen=True)
class ConditionalMI:
    """Jiang et al. (2020)'s normalised conditional mutual information.

    Attributes:
        value: the minimum of ``by_set`` (the paper's K(μ)); NaN when no set is defined.
        argmin: the conditioning set that attains it (``()``: unconditional).
        by_set: Î(V_μ, V_g | U_S) for every conditioning set S considered (NaN: undefined).
    """

    value: float
    argmin: tuple[str, ...]
    by_set: dict[tuple[str, ...], float]

    def by_size(self) -> dict[int, float]:
        """The minimum over the (defined) conditioning sets of each size ``|S|``."""
        sizes = sorted({len(s) for s in self.by_set})
        defined = {s: v for s, v in self.by_set.items() if not math.isnan(v)}
        return {k: min((v for s, v in defined.items() if len(s) == k), default=math.nan) for k in sizes}


def conditional_mutual_information(
    table: pd.DataFrame, measure: str, target: str, axes: Sequence[str], max_condition: int = 2
) -> ConditionalMI:
    """Normalised conditional mutual information (Jiang et al. 2020, section 6).

    Over all ordered pairs of distinct models ``(θ, θ')``, let ``V_μ = sgn(μ(θ) - μ(θ'))`` and
    ``V_g = sgn(g(θ) - g(θ'))`` (values -1, 0, +1), and let ``U_S = (θ_S, θ'_S)`` be the two models'
    values of the axes in S. With the empirical distribution over pairs,

        Î(V_μ, V_g | U_S) = I(V_μ, V_g | U_S) / H(V_g | U_S),

    in [0, 1]: 0 when, once S is known, the measure's order says nothing about the target's,
    1 when it determines it. Every S with ``|S| <= max_condition`` (the empty set included) is
    tried and the minimum is reported, so a measure scores high only when no small set of
    hyper-parameters explains its agreement with the target. When S alone determines ``V_g``
    (``H(V_g | U_S) = 0``, e.g. with one model per value of S) Î is undefined: NaN, left out of the
    minimum. The plug-in estimates are biased upwards when pairs per value of ``U_S`` are few.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"lr": [1, 1, 2, 2], "m": [1, 2, 3, 4], "err": [1, 2, 3, 4]})
    >>> c = conditional_mutual_information(t, "m", "err", ["lr"])
    >>> c.by_set
    {(): 1.0, ('lr',): 1.0}
    """
    _check_columns(table, [measure, target, *axes])
    if isinstance(max_condition, bool) or not isinstance(max_condition, int) or max_condition < 0:
        raise SharpnessError(f"max_condition must be an integer >= 0, got {max_condition!r}")
    table = _hashable(table, axes).dropna(subset=[measure, target])
    m, g = table[measure].to_numpy(float), table[target].to_numpy(float)
    i, j = np.nonzero(~np.eye(len(table), dtype=bool))
    v_m = (np.sign(m[i] - m[j]) + 1).astype(np.int64)
    v_g = (np.sign(g[i] - g[j]) + 1).astype(np.int64)
    by_set: dict[tuple[str, ...], float] = {}
    for k in range(min(max_condition, len(axes)) + 1):
        for s in itertools.combinations(axes, k):
            cell = _codes(table, list(s))
            by_set[s] = _normalised_cmi(cell[i] * (cell.max() + 1) + cell[j], v_m, v_g) if len(i) else math.nan
    defined = {s: v for s, v in by_set.items() if not math.isnan(v)}
    if not defined:
        return ConditionalMI(math.nan, (), by_set)
    argmin = min(defined, key=defined.__getitem__)
    return ConditionalMI(defined[argmin], argmin, by_set)


def _codes(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One integer per row naming its combination of values of ``columns`` (0 for none)."""
    if not columns:
        return np.zeros(len(table), dtype=np.int64)
    return table.groupby(columns, dropna=False, sort=False).ngroup().to_numpy(np.int64)


def _normalised_cmi(u: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """I(A, B | U) / H(B | U) from samples; ``a`` and ``b`` take values in {0, 1, 2}."""
    _, u = np.unique(u, return_inverse=True)
    counts = np.bincount(u * 9 + a * 3 + b, minlength=(u.max() + 1) * 9).reshape(-1, 3, 3)
    p = counts / counts.sum()
    p_u, p_ua, p_ub = p.sum((1, 2), keepdims=True), p.sum(2, keepdims=True), p.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.nansum(np.where(p > 0, p * np.log(p * p_u / (p_ua * p_ub)), 0.0))
        h = -np.nansum(np.where(p_ub > 0, p_ub * np.log(p_ub / p_u), 0.0))
    return float(np.clip(mi / h, 0.0, 1.0)) if h > 1e-12 else math.nan


# -------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

    Attributes:
        estimate: the statistic on the table itself.
        low, high: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled values.
        level: the nominal coverage.
        n: resamples whose statistic was defined (NaN ones are dropped).
    """

    estimate: float
    low: float
    high: float
    level: float
    n: int


def bootstrap_ci(
    table: pd.DataFrame,
    fn: Callable[[pd.DataFrame], float],
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``fn(table)``, resampling rows (models) with replacement.

    ``fn`` takes a table and returns a number, e.g.
    ``lambda t: kendall_tau(t["sharpness"], t["metric.test_err"])``. The draws come from a
    generator seeded by ``seed``, so the interval is reproducible.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    >>> ci = bootstrap_ci(t, lambda d: float(d["x"].mean()), n=200)
    >>> ci.estimate, 1.0 <= ci.low <= ci.estimate <= ci.high <= 4.0
    (2.5, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SharpnessError(f"n (bootstrap resamples) must be an integer >= 1, got {n!r}")
    if not 0.0 < level < 1.0:
        raise SharpnessError(f"level must be in (0, 1), got {level!r}")
    if len(table) == 0:
        raise SharpnessError("bootstrap_ci needs a table with at least one row, got an empty one")
    rng = np.random.default_rng(seed)
    rows = len(table)
    values = np.array([fn(table.iloc[rng.integers(0, rows, rows)]) for _ in range(n)], dtype=float)
    values = values[np.isfinite(values)]
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2]) if len(values) else (math.nan, math.nan)
    return Interval(float(fn(table)), float(low), float(high), level, len(values))


# ---------------------------------------------------------- permutation
@dataclass(frozen=True)
class PermutationNull:
    """What chance alone gives over a table of τ, under the null that no measure depends on any target.

    Attributes:
        thresholds: the |τ| levels counted.
        observed: for each threshold, how many of the table's τ have |τ| at or above it.
        expected: the same count averaged over permutations: how many chance alone gives.
        p_at_least: for each threshold, the fraction of permutations with at least as many |τ| at or
            above it as observed (a family-wise p-value for the count).
        max_quantile: the ``level`` quantile of the largest |τ| in a permuted table: a |τ| above it is
            unlikely (probability ``1 - level``) to arise anywhere in the table by chance.
        n_tests: τ values per table (measures × targets, undefined ones left out).
        n: permutations. level: the quantile of ``max_quantile``.
    """

    thresholds: tuple[float, ...]
    observed: dict[float, int]
    expected: dict[float, float]
    p_at_least: dict[float, float]
    max_quantile: float
    n_tests: int
    n: int
    level: float


def permutation_null(table: pd.DataFrame, measures: Sequence[str], targets: Sequence[str], n: int = 1000,
                     thresholds: Sequence[float] = (0.2, 0.3, 0.4, 0.5), level: float = 0.95,
                     seed: int = 0) -> PermutationNull:
    """A permutation null for a whole :func:`correlation_table`: the multiple-comparisons check.

    Each permutation shuffles the rows of the target columns together (keeping how the targets
    relate to each other, e.g. test and OOD error) against the measure columns (keeping how the
    definitions relate to each other), and recomputes every τ. Under the null hypothesis that the
    measures are independent of the targets every such table is as likely as the observed one, so
    the permuted counts of large |τ| are what chance gives with this many correlated tests.

    >>> import pandas as pd
    >>> t = pd.DataFrame({"m": range(12), "noise": [5, 3, 8, 1, 9, 2, 7, 4, 0, 6, 11, 10],
    ...                   "err": range(12)})
    >>> null = permutation_null(t, ["m", "noise"], ["err"], n=200, thresholds=(0.9,))
    >>> null.observed[0.9], null.expected[0.9] < 0.05, null.p_at_least[0.9] < 0.05
    (1, True, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SharpnessError(f"n (permutations) must be an integer >= 1, got {n!r}")
    if not 0.0 < level < 1.0:
        raise SharpnessError(f"level must be in (0, 1), got {level!r}")
    bad = [t for t in thresholds if not 0.0 <= float(t) <= 1.0]
    if bad or not thresholds:
        raise SharpnessError(f"thresholds must be |tau| levels in [0, 1], got {list(thresholds)!r}")
    _check_columns(table, [*measures, *targets])
    x = table[list(measures)].to_numpy(dtype=float)
    y = table[list(targets)].to_numpy(dtype=float)
    levels = tuple(float(t) for t in thresholds)

    fixed_pairs = _PermutedTaus.of(x, y)

    def abs_taus(rows: np.ndarray) -> np.ndarray:
        if fixed_pairs is not None:
            taus = fixed_pairs.taus(rows).ravel()
        else:
            taus = np.array([kendall_tau(x[:, i], y[rows, j])
                             for i in range(x.shape[1]) for j in range(y.shape[1])])
        return np.abs(taus[np.isfinite(taus)])

    observed = abs_taus(np.arange(len(table)))
    rng = np.random.default_rng(seed)
    permuted = [abs_taus(rng.permutation(len(table))) for _ in range(n)]
    counts = {t: np.array([(p >= t).sum() for p in permuted]) for t in levels}
    largest = np.array([p.max() if len(p) else math.nan for p in permuted])
    return PermutationNull(
        thresholds=levels,
        observed={t: int((observed >= t).sum()) for t in levels},
        expected={t: float(counts[t].mean()) for t in levels},
        p_at_least={t: float((counts[t] >= (observed >= t).sum()).mean()) for t in levels},
        max_quantile=float(np.nanquantile(largest, level)) if np.isfinite(largest).any() else math.nan,
        n_tests=len(observed),
        n=n,
        level=level,
    )


class _PermutedTaus:
    r"""τ-b of every measure with every target after permuting the targets' rows, from pair signs made once.

    A permutation of complete columns changes neither column's ties, only which pairs are concordant, so
    each τ needs only :math:`\sum_{k<l} \mathrm{sgn}(x_k - x_l)\,\mathrm{sgn}(y_{\pi k} - y_{\pi l})`: one
    matrix product over the pair signs, exact in integers, then :func:`kendall_tau`'s arithmetic.
    """

    # Pair-sign elements held at most (float32: 64 MiB); a larger table is counted call by call.
    MAX_ELEMENTS = 1 << 24

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.sx = np.stack([_signs(c) for c in x.T]).reshape(x.shape[1], -1)
        self.sy = np.stack([_signs(c) for c in y.T])
        # Pairs not tied in a column: its nonzero signs, each pair counted twice (0 for a constant column).
        untied_x = np.array([np.count_nonzero(r) // 2 for r in self.sx], dtype=float)
        untied_y = np.array([np.count_nonzero(r) // 2 for r in self.sy.reshape(len(self.sy), -1)], dtype=float)
        self.root_x = np.where(untied_x > 0, np.sqrt(untied_x), math.nan)[:, None]
        self.root_y = np.where(untied_y > 0, np.sqrt(untied_y), math.nan)[None, :]

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> _PermutedTaus | None:
        """The counter for complete columns of at most :data:`PAIRWISE_MAX` models that fit in memory, else None."""
        n = len(x)
        if not (2 <= n <= PAIRWISE_MAX and np.isfinite(x).all() and np.isfinite(y).all()):
            return None
        if (x.shape[1] + y.shape[1]) * n * n > cls.MAX_ELEMENTS:
            return None
        return cls(x, y)

    def taus(self, rows: np.ndarray) -> np.ndarray:
        """τ of measure ``i`` with target ``j`` at ``[i, j]``, the targets' rows taken in the order ``rows``."""
        permuted = self.sy[:, rows][:, :, rows].reshape(len(self.sy), -1)
        con_minus_dis = (self.sx @ permuted.T).astype(float) // 2
        return np.clip(con_minus_dis / self.root_x / self.root_y, -1.0, 1.0)


def _signs(v: np.ndarray) -> np.ndarray:
    r""":math:`\mathrm{sgn}(v_k - v_l)` for every pair, float32 (exact: the values are -1, 0 and 1)."""
    return np.sign(np.subtract.outer(v, v)).astype(np.float32)


# ------------------------------------------------------- study tables
def per_model(df: pd.DataFrame, values: str = "value") -> pd.DataFrame:
    """A study's long table (one row per model and definition) as one row per model.

    Keeps the ``hp.*`` and ``metric.*`` columns, adds one column per definition (named by its
    ``spec`` string, in order of first appearance) holding ``values`` of the rows whose status is
    ``done`` (NaN otherwise), and the generalization gap :data:`GAP` when test and train errors exist.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"model": ["a", "a", "b", "b"], "spec": ["s1", "s2", "s1", "s2"],
    ...                    "value": [1.0, 2.0, 3.0, 4.0], "status": ["done", "done", "done", "failed"],
    ...                    "hp.lr": [0.1, 0.1, 0.2, 0.2], "metric.test_err": [0.3, 0.3, 0.2, 0.2],
    ...                    "metric.train_err": [0.1, 0.1, 0.0, 0.0]})
    >>> per_model(df)[["hp.lr", "s1", "s2", "gap"]]
           hp.lr   s1   s2  gap
    model
    a        0.1  1.0  2.0  0.2
    b        0.2  3.0  NaN  0.2
    """
    _check_columns(df, ["model", "spec", values, "status"])
    specs = list(dict.fromkeys(df["spec"]))
    done = df[df["status"] == "done"]
    if done.duplicated(["model", "spec"]).any():
        pair = done.loc[done.duplicated(["model", "spec"]), ["model", "spec"]].iloc[0].tolist()
        raise SharpnessError(f"the study table has more than one done row for (model, spec) = {pair}")
    measured = done.pivot(index="model", columns="spec", values=values).astype(float)
    info_columns = [c for c in df.columns if str(c).startswith(("hp.", "metric."))]
    info = df.drop_duplicates("model").set_index("model")[info_columns]
    out = info.join(measured.reindex(columns=specs))
    if {_TEST, _TRAIN} <= set(out.columns):
        out[GAP] = out[_TEST].astype(float) - out[_TRAIN].astype(float)
    return out


def default_axes(table: pd.DataFrame) -> list[str]:
    """The ``hp.*`` columns that vary (two or more distinct values), seeds excluded."""
    table = _hashable(table, [c for c in table.columns if str(c).startswith("hp.")])
    return [
        str(c)
        for c in table.columns
        if str(c).startswith("hp.") and c not in _REPLICATE_AXES and table[c].nunique(dropna=True) > 1
    ]


def default_targets(table: pd.DataFrame) -> list[str]:
    """Test error, generalization gap, every OOD error, then every numeric varying hyper-parameter."""
    import pandas as pd

    columns = [str(c) for c in table.columns]
    ood = [c for c in columns if c.startswith("metric.ood.") and c.endswith("_err")]
    numeric_hp = [
        c
        for c in default_axes(table)
        if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
    ]
    return [c for c in (_TEST, GAP) if c in columns] + ood + numeric_hp


# ---------------------------------------------------------------- helpers
def _floats(values: Any, name: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise SharpnessError(f"{name} must hold numbers, got {list(values)[:5]!r}...") from None
    if out.ndim != 1:
        raise SharpnessError(f"{name} must be one-dimensional, got shape {out.shape}")
    return out


def _mean(values: Any) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if len(values) else math.nan


def _check_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SharpnessError(f"column(s) {missing} not in the table; it has {[str(c) for c in table.columns]}")


def _hashable(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy whose ``columns`` hold hashable values (lists and dicts become JSON text) for grouping."""
    convert = [c for c in columns if table[c].map(lambda v: not isinstance(v, Hashable)).any()]
    if not convert:
        return table
    table = table.copy()
    for c in convert:
        table[c] = table[c].map(lambda v: v if isinstance(v, Hashable) else json.dumps(v, sort_keys=True))
    return table
