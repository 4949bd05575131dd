"""Closed forms, second-order relations, invariances and feasibility."""

import itertools
import math

import pytest
import torch

from sharpness import Spec, measure
from testkit import Quadratic, TwoLogit, classification_data, mean_loss, mlp, random_psd


def quadratic_case(n: int, seed: int, zeros: int) -> tuple[Quadratic, torch.Tensor]:
    """A quadratic at its minimum ``w*`` with ``zeros`` weights exactly 0; returns D H D for elementwise."""
    g = torch.Generator().manual_seed(seed)
    w_star = torch.randn(n, generator=g, dtype=torch.float64)
    w_star[:zeros] = 0.0
    a = random_psd(n, seed)
    d = torch.diag(w_star.abs())
    return Quadratic(a, w_star), d @ a @ d


def one_batch(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(n, 1, dtype=torch.float64), torch.zeros(n))]


@pytest.mark.parametrize(("norm", "factor"), [("l2", 0.5), ("linf", 1 / 6)])
@pytest.mark.parametrize("antithetic", [False, True])
def test_average_case_on_quadratic_is_trace(norm: str, factor: float, antithetic: bool) -> None:
    model, dhd = quadratic_case(12, seed=1, zeros=3)
    rho = 0.3
    spec = Spec(case="average", norm=norm, rho=rho, n_iters=400, antithetic=antithetic, seed=3)
    res = measure(model, one_batch(), spec, loss_fn=mean_loss)
    expected = factor * rho**2 * float(torch.trace(dhd))
    assert res.stderr is not None and res.stderr > 0
    assert abs(res.value - expected) < 4 * res.stderr
    assert res.error_increase is None and res.radius is None


@pytest.mark.parametrize(("n", "zeros", "seed"), [(8, 0, 0), (10, 3, 1), (16, 5, 2)])
def test_worst_case_l2_on_quadratic_is_top_eigenvalue(n: int, zeros: int, seed: int) -> None:
    model, dhd = quadratic_case(n, seed, zeros)
    rho = 0.2
    spec = Spec(case="worst", norm="l2", rho=rho, n_iters=60, init="random", n_restarts=3, seed=seed)
    res = measure(model, one_batch(), spec, loss_fn=mean_loss)
    exact = 0.5 * rho**2 * float(torch.linalg.eigvalsh(dhd)[-1])
    assert res.value <= exact * (1 + 1e-12)
    assert res.value >= 0.97 * exact
    assert res.radius is not None and res.radius <= rho


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_worst_case_linf_on_quadratic_reaches_best_vertex(seed: int) -> None:
    n = 7
    model, dhd = quadratic_case(n, seed, zeros=1)
    rho = 0.5
    # Convex maximisation over a box: the maximum sits at one of the 2^n vertices.
    vertices = torch.tensor(list(itertools.product([-rho, rho], repeat=n)), dtype=torch.float64)
    exact = float((0.5 * torch.einsum("vi,ij,vj->v", vertices, dhd, vertices)).max())
    spec = Spec(case="worst", norm="linf", rho=rho, n_iters=30, init="random", n_restarts=8, seed=seed)
    res = measure(model, one_batch(), spec, loss_fn=mean_loss)
    assert exact * 0.97 <= res.value <= exact * (1 + 1e-12)
    assert res.radius is not None and res.radius <= rho


@pytest.mark.parametrize(("scaling", "eta"), [("standard", 0.0), ("elementwise", 0.0), ("elementwise", 0.1)])
def test_one_example_logistic_regression_closed_form(scaling: str, eta: float) -> None:
    g = torch.Generator().manual_seed(0)
    d, rho = 20, 0.05
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w[:4] = 0.0
    x = torch.randn(1, d, generator=g, dtype=torch.float64)
    y = torch.ones(1, dtype=torch.long)
    c = torch.ones(d, dtype=torch.float64) if scaling == "standard" else w.abs() + eta
    margin = float(x[0] @ w)
    drop = rho * float(torch.linalg.vector_norm(c * x[0]))
    exact = math.log1p(math.exp(-(margin - drop))) - math.log1p(math.exp(-margin))
    spec = Spec(case="worst", norm="l2", rho=rho, scaling=scaling, eta=eta, n_iters=30)
    res = measure(TwoLogit(w), [(x, y)], spec)
    assert res.value == pytest.approx(exact, rel=1e-6)
    assert res.value <= exact * (1 + 1e-12)


def rescale_neurons(model: torch.nn.Sequential, scales: torch.Tensor) -> torch.nn.Sequential:
    """Function-preserving ReLU rescaling: neuron j's input weights times a_j, output weights over a_j."""
    first, last = model[0], model[2]
    with torch.no_grad():
        first.weight.mul_(scales[:, None])
        if first.bias is not None:
            first.bias.mul_(scales)
        last.weight.div_(scales[None, :])
    return model


SPECS_FOR_INVARIANCE = [
    Spec(case="worst", norm="linf", rho=0.05, m=32, n_examples=64),
    Spec(case="worst", norm="l2", rho=0.3, m=64, n_examples=64, logit_norm=True),
    Spec(case="average", norm="l2", rho=0.2, m=32, n_examples=64, n_iters=16),
    Spec(case="average", norm="linf", rho=0.2, m=64, n_examples=64, n_iters=16),
]


@pytest.mark.parametrize("spec", SPECS_FOR_INVARIANCE, ids=str)
def test_elementwise_is_invariant_to_neuron_rescaling_and_standard_is_not(spec: Spec) -> None:
    data = classification_data()
    scales = torch.logspace(-1, 1, 16, dtype=torch.float64)
    base, moved = mlp(), rescale_neurons(mlp(), scales)
    assert torch.allclose(base(data[0]), moved(data[0]))
    a, b = measure(base, data, spec), measure(moved, data, spec)
    assert b.value == pytest.approx(a.value, rel=1e-6, abs=1e-12)
    assert a.value != 0.0
    std = spec.replace(scaling="standard")
    assert abs(measure(base, data, std).value - measure(moved, data, std).value) > 1e-3 * measure(base, data, std).value


def test_filterwise_is_invariant_to_layer_rescaling_only() -> None:
    data = classification_data()
    spec = Spec(case="worst", norm="l2", rho=0.3, scaling="filterwise", m=64, n_examples=64)
    base = mlp(bias=False)
    layer = rescale_neurons(mlp(bias=False), torch.full((16,), 3.0, dtype=torch.float64))
    neuron = rescale_neurons(mlp(bias=False), torch.logspace(-1, 1, 16, dtype=torch.float64))
    ref = measure(base, data, spec).value
    assert measure(layer, data, spec).value == pytest.approx(ref, rel=1e-6)
    assert abs(measure(neuron, data, spec).value - ref) > 1e-3 * ref


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("scaling", ["standard", "elementwise", "filterwise"])
@pytest.mark.parametrize("init", ["zero", "random"])
def test_every_reported_point_is_feasible(norm: str, scaling: str, init: str) -> None:
    model = mlp(dtype=torch.float32)
    with torch.no_grad():
        model[0].weight[:, :3] = 0.0  # exact zeros broke the released code's L2 projection
    x, y = classification_data(dtype=torch.float32)
    rho = 0.5 if norm == "l2" else 0.01
    spec = Spec(case="worst", norm=norm, rho=rho, scaling=scaling, init=init, n_iters=12, n_restarts=2,
                m=32, n_examples=64)
    res = measure(model, (x, y), spec)
    assert res.radius is not None and 0 < res.radius <= rho
    assert res.value > 0


def test_zero_scale_elements_never_move() -> None:
    model = mlp()
    with torch.no_grad():
        model[2].weight.zero_()
    data = classification_data()
    frozen = Spec(case="worst", norm="l2", rho=1.0, m=64, n_examples=64, params=r"^2\.weight$")
    assert measure(model, data, frozen).value == 0.0
    avg = frozen.replace(case="average", n_iters=4)
    assert measure(model, data, avg).value == 0.0


def test_worst_case_is_at_least_the_average_case() -> None:
    data = classification_data()
    model = mlp()
    worst = measure(model, data, Spec(case="worst", norm="linf", rho=0.05, m=64, n_examples=64))
    avg = measure(model, data, Spec(case="average", norm="linf", rho=0.05, m=64, n_examples=64, n_iters=32))
    assert worst.value >= avg.value
