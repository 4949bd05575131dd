"""sharpness.stats against independent hand computations on constructed tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mutual_info_score

from sharpness import stats
from sharpness.errors import SharpnessError


def tau_b_by_pairs(a: list[float], b: list[float]) -> float:
    """τ-b by counting every pair: (P - Q) / sqrt((P + Q + T_a)(P + Q + T_b))."""
    p = q = t_a = t_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[j] - a[i]), np.sign(b[j] - b[i])
        if da == 0 and db == 0:
            continue
        if da == 0:
            t_a += 1
        elif db == 0:
            t_b += 1
        elif da == db:
            p += 1
        else:
            q += 1
    return (p - q) / math.sqrt((p + q + t_a) * (p + q + t_b))


# ------------------------------------------------------------------ tau-b
def _ties(seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, 15).tolist(), rng.integers(0, 3, 15).tolist()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1, 2, 2, 3], [1, 2, 3, 3]),
        ([1, 2, 2, 3, 3, 3], [1, 1, 2, 2, 3, 1]),
        ([0.5, 0.5, 0.5, 2.0, 1.0], [3.0, 1.0, 2.0, 2.0, 2.0]),
        _ties(0),
        _ties(1),
        _ties(2),
    ],
)
def test_kendall_tau_matches_pair_count_with_ties(a, b):
    assert stats.kendall_tau(a, b) == pytest.approx(tau_b_by_pairs(a, b), abs=1e-12)
    assert stats.kendall_tau(b, a) == pytest.approx(stats.kendall_tau(a, b), abs=1e-12)
    assert stats.kendall_tau(a, [-v for v in b]) == pytest.approx(-stats.kendall_tau(a, b), abs=1e-12)
    # a strictly increasing transform keeps every rank
    assert stats.kendall_tau(np.exp(a), b) == pytest.approx(stats.kendall_tau(a, b), abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 40, 300])
@pytest.mark.parametrize("levels", [(2, 3), (5, None), (None, None)])
def test_pairwise_and_sorting_counts_give_the_same_tau_bit_for_bit(n, levels, monkeypatch):
    """Small tables are counted over the pair matrix, large ones by scipy's sort: the same number either way."""
    rng = np.random.default_rng(n)

    def column(k):
        return rng.integers(0, k, n).astype(float) if k else rng.normal(size=n)

    a, b = column(levels[0]), column(levels[1])
    pairwise = stats.kendall_tau(a, b)
    monkeypatch.setattr(stats, "PAIRWISE_MAX", 1)
    sorted_count = stats.kendall_tau(a, b)
    assert pairwise == sorted_count or (math.isnan(pairwise) and math.isnan(sorted_count))
    if n <= 40 and not math.isnan(pairwise):
        assert pairwise == pytest.approx(tau_b_by_pairs(a.tolist(), b.tolist()), abs=1e-12)


def test_kendall_tau_drops_nan_pairs_and_is_nan_when_undefined():
    a, b = [1.0, 2.0, math.nan, 3.0, 4.0], [1.0, 3.0, 0.0, 2.0, math.nan]
    assert stats.kendall_tau(a, b) == pytest.approx(tau_b_by_pairs([1, 2, 3], [1, 3, 2]))
    assert math.isnan(stats.kendall_tau([1, 1, 1], [1, 2, 3]))
    assert math.isnan(stats.kendall_tau([1.0], [2.0]))
    with pytest.raises(SharpnessError, match="equal length"):
        stats.kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(SharpnessError, match="numbers"):
        stats.kendall_tau(["sgd", "adam"], [1, 2])


def test_correlation_table_is_tau_of_each_pair():
    rng = np.random.default_rng(0)
    t = pd.DataFrame(rng.normal(size=(12, 4)), columns=["m1", "m2", "err", "lr"])
    table = stats.correlation_table(t, ["m1", "m2"], ["err", "lr"])
    assert table.shape == (2, 2)
    for m, target in itertools.product(["m1", "m2"], ["err", "lr"]):
        assert table.loc[m, target] == pytest.approx(tau_b_by_pairs(t[m].tolist(), t[target].tolist()))


# ------------------------------------------------------------ granulated
# A 3 x 2 grid whose answer is worked out by hand:
#   axis lr (groups bs=a, bs=b): tau([1,2,3],[1,2,3]) = 1 and tau([10,30,20],[5,6,7]) = 1/3 -> psi_lr = 2/3
#   axis bs (groups lr=1,2,3 of two models): the measure rises with the error in each -> psi_bs = 1
GRID = pd.DataFrame(
    {
        "lr": [1, 2, 3, 1, 2, 3],
        "bs": ["a", "a", "a", "b", "b", "b"],
        "m": [1.0, 2.0, 3.0, 10.0, 30.0, 20.0],
        "err": [1.0, 2.0, 3.0, 5.0, 6.0, 7.0],
    }
)


def test_granulated_kendall_by_hand():
    g = stats.granulated_kendall(GRID, "m", "err", ["lr", "bs"])
    assert g.per_axis == pytest.approx({"lr": 2 / 3, "bs": 1.0})
    assert g.psi == pytest.approx(5 / 6)
    assert g.n_groups == {"lr": 2, "bs": 3}
    # one axis alone: a single group, so psi is the plain tau over all models
    one = stats.granulated_kendall(GRID, "m", "err", ["lr"])
    assert one.psi == pytest.approx(tau_b_by_pairs(GRID["m"].tolist(), GRID["err"].tolist()))


def test_granulated_kendall_replicates_and_undefined_groups():
    # two seeds per cell (seed is not an axis): each lr-group holds 4 models; bs-groups where the
    # error is constant have an undefined tau and are skipped
    rows = [
        {"lr": lr, "bs": bs, "seed": s, "m": lr + 0.1 * s + 0.5 * (bs == "b"), "err": lr if bs == "a" else 5.0}
        for lr, bs, s in itertools.product([1, 2], ["a", "b"], [0, 1])
    ]
    t = pd.DataFrame(rows)
    g = stats.granulated_kendall(t, "m", "err", ["lr", "bs"])
    expected_a = tau_b_by_pairs([1.0, 1.1, 2.0, 2.1], [1, 1, 2, 2])
    assert g.per_axis["lr"] == pytest.approx(expected_a)  # the bs=b group has a constant error
    assert g.n_groups == {"lr": 1, "bs": 2}
    # each lr-group: m = [lr, lr + .1, lr + .5, lr + .6] against err = [lr, lr, 5, 5]
    assert g.per_axis["bs"] == pytest.approx(tau_b_by_pairs([1.0, 1.1, 1.5, 1.6], [1, 1, 5, 5]))
    assert g.psi == pytest.approx((g.per_axis["lr"] + g.per_axis["bs"]) / 2)


def test_tau_within_each_group_against_pair_counts():
    # a: m ranks err with one discordant pair; b: m has a NaN (dropped); c: err constant (undefined)
    t = pd.DataFrame({
        "arch": ["a"] * 4 + ["b"] * 3 + ["c"] * 2,
        "m": [1.0, 2.0, 3.0, 4.0, 5.0, math.nan, 7.0, 8.0, 9.0],
        "err": [0.1, 0.3, 0.2, 0.4, 0.9, 0.8, 0.7, 0.5, 0.5],
    })
    out = stats.tau_within(t, "m", "err", "arch")
    assert list(out.index) == ["a", "b", "c"] and out["n"].tolist() == [4, 2, 2]
    assert out.loc["a", "tau"] == pytest.approx(tau_b_by_pairs([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]))  # 4/6
    assert out.loc["b", "tau"] == pytest.approx(-1.0)
    assert math.isnan(out.loc["c", "tau"])


# ------------------------------------------------------------- sign-error
def test_sign_error_by_hand():
    # Environments: lr changes within bs=a (3 pairs, all agree) and bs=b (lr 2->3: the measure falls
    # from 30 to 20 while the error rises: error 1); bs changes for each lr (3, all agree).
    s = stats.sign_error(GRID, "m", "err", ["lr", "bs"])
    assert len(s.environments) == 9
    assert s.mean == pytest.approx(1 / 9)
    assert s.max == 1.0
    assert s.per_axis == pytest.approx({"lr": 1 / 6, "bs": 0.0})
    worst = s.environments.loc[s.environments["error"] == 1.0].iloc[0]
    assert (worst["axis"], worst["a"], worst["b"], worst["context"]) == ("lr", 2, 3, "bs=b")
    # pairs whose error differs by at most 1.5 are noise: the failing environment drops out
    filtered = stats.sign_error(GRID, "m", "err", ["lr", "bs"], min_diff=1.5)
    assert len(filtered.environments) == 5
    assert filtered.max == 0.0


@pytest.mark.parametrize(
    ("transform", "expected"),
    [(lambda e: 2 * e + 1, 0.0), (lambda e: np.exp(e), 0.0), (lambda e: -e, 1.0), (lambda e: 0 * e, 0.5)],
)
def test_sign_error_perfect_reversed_and_constant(transform, expected):
    rng = np.random.default_rng(3)
    t = pd.DataFrame(list(itertools.product([0.01, 0.1, 1.0], [32, 128], [0, 1])), columns=["lr", "bs", "seed"])
    t["err"] = rng.uniform(size=len(t))
    t["m"] = transform(t["err"])
    s = stats.sign_error(t, "m", "err", ["lr", "bs"])
    assert s.mean == pytest.approx(expected)
    assert s.max == pytest.approx(expected)
    assert set(s.environments["n_pairs"]) == {4}  # two seeds on each side


# --------------------------------------------------------------- CMI
def _zoo(n_seeds: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grid = itertools.product([0.01, 0.03, 0.1], [32, 64, 128], ["sgd", "adam"], range(n_seeds))
    t = pd.DataFrame(list(grid), columns=["lr", "bs", "opt", "seed"])
    t["err"] = rng.normal(size=len(t))
    return t


def test_cmi_deterministic_measure_is_one():
    t = _zoo(3)
    t["m"] = np.exp(t["err"])
    c = stats.conditional_mutual_information(t, "m", "err", ["lr", "bs", "opt"])
    assert len(c.by_set) == 1 + 3 + 3
    assert all(v == pytest.approx(1.0) for v in c.by_set.values())
    assert c.value == pytest.approx(1.0)


def test_cmi_independent_measure_is_near_zero():
    t = _zoo(12)
    t["m"] = np.random.default_rng(99).normal(size=len(t))
    c = stats.conditional_mutual_information(t, "m", "err", ["lr", "bs", "opt"])
    assert max(c.by_set.values()) < 0.02


def test_cmi_finds_the_confounding_hyper_parameter():
    # measure and error both follow lr and nothing else: they agree, but lr explains it all
    t = _zoo(4)
    noise = np.random.default_rng(5).normal(size=(2, len(t)))
    t["err"] = np.log(t["lr"]) + 0.01 * noise[0]
    t["m"] = np.log(t["lr"]) + 0.01 * noise[1]
    c = stats.conditional_mutual_information(t, "m", "err", ["lr", "bs", "opt"])
    # unconditionally the signs agree on the 2/3 of pairs with different lr and by chance on the
    # rest: P(disagree) = q ~ 1/6, Î = 1 - h(q) / log 2 ~ 0.35; conditioning on bs changes nothing
    q = 1 / 2 * (3 * 24 * 23) / (72 * 71)
    closed_form = 1 + (q * math.log(q) + (1 - q) * math.log(1 - q)) / math.log(2)
    assert c.by_set[()] == pytest.approx(closed_form, abs=0.03)
    assert c.by_set[("bs",)] == pytest.approx(closed_form, abs=0.03)
    # given lr, the error's order is fixed across lr values and pure noise within: nothing is left
    assert "lr" in c.argmin
    assert c.value < 0.02
    assert c.by_size()[0] == c.by_set[()]


def test_cmi_matches_an_independent_computation():
    t = _zoo(2, seed=7)
    t["m"] = t["err"] + np.random.default_rng(8).normal(size=len(t))
    c = stats.conditional_mutual_information(t, "m", "err", ["lr", "bs"], max_condition=1)
    assert set(c.by_set) == {(), ("lr",), ("bs",)}
    for s, value in c.by_set.items():
        assert value == pytest.approx(_cmi_by_cells(t, "m", "err", list(s)), abs=1e-10)


def _cmi_by_cells(t: pd.DataFrame, measure: str, target: str, s: list[str]) -> float:
    """Σ_c p(c) I_c / Σ_c p(c) H_c over ordered pairs, with sklearn's MI and a direct entropy."""
    pairs = [(i, j) for i in range(len(t)) for j in range(len(t)) if i != j]
    values = list(t[s].itertuples(index=False, name=None))
    cells: dict[tuple, list[tuple[int, int]]] = {}
    for i, j in pairs:
        cells.setdefault(values[i] + values[j], []).append((i, j))
    m, g = t[measure].to_numpy(), t[target].to_numpy()
    mi = h = 0.0
    for members in cells.values():
        vm = [np.sign(m[i] - m[j]) for i, j in members]
        vg = [np.sign(g[i] - g[j]) for i, j in members]
        weight = len(members) / len(pairs)
        mi += weight * mutual_info_score(vm, vg)
        _, counts = np.unique(vg, return_counts=True)
        q = counts / counts.sum()
        h -= weight * float(np.sum(q * np.log(q)))
    return mi / h


def test_cmi_undefined_when_the_condition_fixes_the_target():
    # one model per lr: given the pair's lr values every sign is known, so Î given lr is undefined;
    # a reversed measure determines the order as much as an exact one does
    t = pd.DataFrame({"lr": [1, 2, 3, 4], "m": [4.0, 3.0, 2.0, 1.0]})
    t["err"] = t["lr"] * 1.0
    c = stats.conditional_mutual_information(t, "m", "err", ["lr"])
    assert c.by_set[()] == pytest.approx(1.0)
    assert math.isnan(c.by_set[("lr",)])
    assert c.value == pytest.approx(1.0) and c.argmin == ()
    assert math.isnan(c.by_size()[1])


# -------------------------------------------------------------- bootstrap
def _noisy(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"m": x, "err": x + rng.normal(size=n)})


def _tau(t: pd.DataFrame) -> float:
    return stats.kendall_tau(t["m"], t["err"])


def test_bootstrap_ci_contains_estimate_narrows_and_is_seeded():
    small = stats.bootstrap_ci(_noisy(20), _tau, n=100)
    large = stats.bootstrap_ci(_noisy(320), _tau, n=100)
    for ci in (small, large):
        assert ci.low <= ci.estimate <= ci.high
        assert ci.n == 100 and ci.level == 0.95
    assert large.high - large.low < 0.5 * (small.high - small.low)
    assert stats.bootstrap_ci(_noisy(20), _tau, n=100) == small
    assert stats.bootstrap_ci(_noisy(20), _tau, n=100, seed=1) != small
    narrow = stats.bootstrap_ci(_noisy(20), _tau, n=100, level=0.5)
    assert small.low <= narrow.low <= narrow.high <= small.high


@pytest.mark.parametrize(("kwargs", "match"), [({"n": 0}, "resamples"), ({"level": 1.0}, "level")])
def test_bootstrap_ci_rejects_bad_arguments(kwargs, match):
    with pytest.raises(SharpnessError, match=match):
        stats.bootstrap_ci(_noisy(5), _tau, **kwargs)


# ------------------------------------------------------------ study tables
def test_per_model_and_defaults():
    rows = []
    for model, lr, seed in [("a", 0.1, 0), ("b", 0.2, 0), ("c", 0.2, 1)]:
        for spec, value in [("s1", 1.0), ("s2", 2.0)]:
            failed = model == "c" and spec == "s2"
            rows.append({
                "model": model, "spec": spec, "value": None if failed else value + lr,
                "status": "failed" if failed else "done", "hp.lr": lr, "hp.seed": seed, "hp.width": 8,
                "metric.train_err": 0.0, "metric.test_err": lr, "metric.ood.blur_err": 2 * lr,
            })  # fmt: skip
    table = stats.per_model(pd.DataFrame(rows))
    assert list(table.index) == ["a", "b", "c"]
    assert table["s1"].tolist() == pytest.approx([1.1, 1.2, 1.2])
    assert math.isnan(table.loc["c", "s2"])
    assert table[stats.GAP].tolist() == pytest.approx([0.1, 0.2, 0.2])
    assert stats.default_axes(table) == ["hp.lr"]  # the seed replicates; the width does not vary
    assert stats.default_targets(table) == ["metric.test_err", stats.GAP, "metric.ood.blur_err", "hp.lr"]
    with pytest.raises(SharpnessError, match="more than one"):
        stats.per_model(pd.DataFrame(rows + rows[:1]))
    with pytest.raises(SharpnessError, match="not in the table"):
        stats.granulated_kendall(table, "s1", "metric.nope", ["hp.lr"])


# ------------------------------------------------------------ permutation null
def test_permutation_null_matches_the_exact_null_of_four_models():
    """With 4 models all 24 orders are equally likely under the null; |τ| = 1 for 2 of them."""
    t = pd.DataFrame({"m": [1.0, 2.0, 3.0, 4.0], "err": [0.1, 0.4, 0.2, 0.3]})
    null = stats.permutation_null(t, ["m"], ["err"], n=6000, thresholds=(1.0, 2 / 3 - 1e-9), seed=3)
    assert null.n_tests == 1
    assert null.expected[1.0] == pytest.approx(2 / 24, abs=0.012)
    # |τ| >= 2/3 : orders with at most one discordant pair, 2 x (1 + 3) = 8 of 24
    assert null.expected[2 / 3 - 1e-9] == pytest.approx(8 / 24, abs=0.02)
    assert null.observed[1.0] == 0 and null.p_at_least[1.0] == 1.0


def test_permutation_null_keeps_the_targets_together():
    """Two identical targets: every permutation moves both, so counts come in pairs."""
    rng = np.random.default_rng(0)
    t = pd.DataFrame({"m": rng.normal(size=10), "a": rng.normal(size=10)})
    t["b"] = t["a"]
    null = stats.permutation_null(t, ["m"], ["a", "b"], n=300, thresholds=(0.0, 0.3))
    assert null.n_tests == 2 and null.observed[0.0] == 2 and null.expected[0.0] == 2.0
    assert (null.expected[0.3] / 2) == pytest.approx(round(null.expected[0.3] / 2 * 300) / 300)


def test_permutation_null_finds_a_real_dependence_among_many_tests():
    rng = np.random.default_rng(1)
    n = 30
    err = rng.normal(size=n)
    t = pd.DataFrame({f"noise{i}": rng.normal(size=n) for i in range(10)} | {"signal": err + 0.2 * rng.normal(size=n),
                                                                            "err": err})
    null = stats.permutation_null(t, list(t.columns[:-1]), ["err"], n=400, thresholds=(0.5,))
    assert null.observed[0.5] >= 1 and null.p_at_least[0.5] < 0.05
    assert 0.2 < null.max_quantile < 0.5  # the largest of 11 null |τ| over 30 models


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n": 0}, "n \\(permutations\\)"), ({"level": 1.0}, "level"), ({"thresholds": (1.5,)}, "thresholds"),
     ({"thresholds": ()}, "thresholds")],
)
def test_permutation_null_rejects_bad_input(kwargs, match):
    t = pd.DataFrame({"m": [1.0, 2.0, 3.0], "err": [1.0, 2.0, 3.0]})
    with pytest.raises(SharpnessError, match=match):
        stats.permutation_null(t, ["m"], ["err"], **kwargs)
