"""Logistic regression along the ray alpha * w: closed forms against measure(), the notebook's numbers."""

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sharpness import SharpnessError, Spec, measure
from sharpness.objective import normalize_logits
from sharpness.toy import cli
from sharpness.toy.logistic import (
    RADII,
    GaussianClasses,
    LinearClassifier,
    logistic_loss,
    make_gaussian_classes,
    margins,
    train,
    worst_case_one_example,
)


@pytest.fixture(scope="module")
def trained() -> tuple[GaussianClasses, LinearClassifier]:
    data = make_gaussian_classes()
    return data, train(data)


def test_training_reproduces_the_notebook(trained: tuple[GaussianClasses, LinearClassifier]) -> None:
    data, model = trained
    w = model.weight.detach()
    # The notebook: ||w||_2 = 6.2469, train loss 0.0020, every test point classified correctly.
    assert float(w.norm()) == pytest.approx(6.25, rel=0.01)
    assert F.cross_entropy(model(data.x), data.y).item() == pytest.approx(0.0020, rel=0.05)
    assert float((margins(w, data.x_test, data.y_test) <= 0).double().mean()) == 0.0


@pytest.mark.parametrize("radius", list(RADII))
@pytest.mark.parametrize("alpha", [2.0**-6, 0.3, 1.0])
def test_one_example_closed_form_matches_auto_pgd(trained: tuple[GaussianClasses, LinearClassifier],
                                                  radius: str, alpha: float) -> None:
    data, model = trained
    x, y = data.x[:4], data.y[:4]
    scaled = model.scaled(alpha)
    exact = worst_case_one_example(scaled.weight.detach(), x, y, 0.5, radius).mean().item()
    spec = Spec(case="worst", norm="l2", rho=0.5, scaling=RADII[radius], n_iters=30)
    res = measure(scaled, [(x[i : i + 1], y[i : i + 1]) for i in range(4)], spec)
    assert res.value == pytest.approx(exact, rel=1e-7)


@pytest.mark.parametrize("radius", list(RADII))
def test_joint_search_never_beats_the_one_example_bound(trained: tuple[GaussianClasses, LinearClassifier],
                                                        radius: str) -> None:
    # max_delta mean_j l_j <= mean_j max_delta l_j; the two classes share one direction, so it is nearly tight.
    data, model = trained
    scaled = model.scaled(0.3)
    m1 = worst_case_one_example(scaled.weight.detach(), data.x, data.y, 0.5, radius).mean().item()
    spec = Spec(case="worst", norm="l2", rho=0.5, scaling=RADII[radius], n_iters=30)
    mn = measure(scaled, [(data.x, data.y)], spec).value
    assert 0.9 * m1 <= mn <= m1 * (1 + 1e-12)


@pytest.mark.parametrize(("step", "paper"), [(0, 0.0016), (5, 0.0167), (10, 0.1379), (15, 0.0208)])
def test_norm_relative_values_match_the_paper(trained: tuple[GaussianClasses, LinearClassifier], step: int,
                                               paper: float) -> None:
    # The notebook's alphas: 30 log-spaced in [2^-10, 2^10]; it prints every fifth.
    data, model = trained
    alpha = 2.0 ** (-10 + 20 * step / 29)
    w = model.scaled(alpha).weight.detach()
    value = worst_case_one_example(w, data.x, data.y, 0.5, "norm").mean().item()
    assert value == pytest.approx(paper, rel=0.06)


def test_small_alpha_is_first_order_in_alpha(trained: tuple[GaussianClasses, LinearClassifier]) -> None:
    # l(m - drop) - l(m) -> drop / 2 as m, drop -> 0: rho alpha ||w|| mean ||x|| / 2 for the norm radius.
    data, model = trained
    alpha = 2.0**-16
    w = model.scaled(alpha).weight.detach()
    value = worst_case_one_example(w, data.x, data.y, 0.5, "norm").mean().item()
    assert value == pytest.approx(0.5 * alpha * float(w.norm() / alpha) * float(data.x.norm(dim=1).mean()) / 2,
                                  rel=1e-3)


@pytest.mark.parametrize(("radius", "invariant"), [("standard", False), ("elementwise", True), ("norm", True)])
@pytest.mark.parametrize("rho", [0.5, 1.2])
def test_logit_normalisation_makes_adaptive_radii_constant_along_the_ray(
        trained: tuple[GaussianClasses, LinearClassifier], radius: str, invariant: bool, rho: float) -> None:
    data, model = trained
    values = [worst_case_one_example(model.scaled(a).weight.detach(), data.x, data.y, rho, radius,
                                     logit_norm=True).mean().item() for a in (2.0**-10, 1.0, 2.0**10)]
    assert (max(values) - min(values) < 1e-12) == invariant
    raw = [worst_case_one_example(model.scaled(a).weight.detach(), data.x, data.y, rho, radius).mean().item()
           for a in (2.0**-10, 1.0)]
    assert abs(raw[0] - raw[1]) > 1e-4


@pytest.mark.parametrize("logit_norm", [False, True])
def test_logistic_loss_is_the_cross_entropy_of_the_two_logits(logit_norm: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g)
    model = LinearClassifier(torch.randn(5, generator=g, dtype=torch.float64))
    logits = model(x)
    ce = F.cross_entropy(normalize_logits(logits) if logit_norm else logits, y, reduction="none")
    mine = logistic_loss(margins(model.weight.detach(), x, y), logit_norm)
    assert torch.allclose(ce, mine, rtol=1e-12, atol=1e-14)
    if logit_norm:
        assert set(torch.round(mine, decimals=6).tolist()) <= {round(math.log1p(math.exp(s * math.sqrt(2))), 6)
                                                               for s in (-1, 1)}


def test_odd_sizes_are_refused() -> None:
    with pytest.raises(SharpnessError, match="even"):
        make_gaussian_classes(n=7)


def test_command_writes_json_and_figure(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "toy"
    args = parser.parse_args(["toy", "logistic", "--out", str(out), "--n-alphas", "3", "--n-starts", "2",
                              "--n-iters", "5", "--d", "20", "--n", "10", "--n-test", "10"])
    assert args.func(args) == 0
    results = json.loads((out / "logistic.json").read_text())
    assert len(results["rows"]) == 3 * len(RADII) * 2
    assert all(len(r["mn"]["random_starts"]) == 2 for r in results["rows"])
    assert results["checks"]["m1_closed_form_vs_measure"] < 1e-6
    assert (out / "logistic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
