"""Keskar and PAC-Bayes flatness on closed forms, BatchNorm folding, spec forms and restoration."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn

from sharpness import SharpnessError, Spec, measure
from sharpness.batchnorm import fold_batchnorm
from sharpness.cases.keskar import subspace_basis
from sharpness.objective import Batch
from testkit import Quadratic, TwoLogit, assert_restored, mean_loss, random_psd, snapshot


def quadratic(n: int, seed: int) -> Quadratic:
    w_star = torch.randn(n, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    return Quadratic(random_psd(n, seed), w_star)


def one_example(d: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w[:2] = 0.0
    x = torch.randn(1, d, generator=g, dtype=torch.float64)
    return w, x * torch.sign(x @ w), torch.ones(1, dtype=torch.long)  # a correctly classified example


def softplus_neg(margin: float) -> float:
    return math.log1p(math.exp(-margin))


def mlp(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    x = torch.randn(48, 5, dtype=torch.float64)
    return net, [(x, net(x).argmax(dim=1).detach())]


# ------------------------------------------------------------------ Keskar
EPSILONS = [1e-3, 1e-2, 5e-2]


@pytest.mark.parametrize("subspace", [0, 4])
def test_keskar_on_one_logistic_example_is_closed_form_and_grows_with_eps(subspace: int) -> None:
    w, x, y = one_example()
    margin = float(x[0] @ w)
    if subspace:
        a = subspace_basis(w.numel(), subspace, seed=0, like=w)
        # Box |y_j| <= eps (|(A^T w)_j| + 1) in delta = A y: the margin drops by eps sum_j s_j |(A^T x)_j|.
        per_eps = float(((a.T @ w).abs() + 1) @ (a.T @ x[0]).abs())
    else:
        per_eps = float((w.abs() + 1) @ x[0].abs())
    values = []
    for eps in EPSILONS:
        spec = Spec.parse(f"keskar-linf-elementwise:rho={eps},eta=1.0,n_iters=30,subspace={subspace}")
        res = measure(TwoLogit(w), [(x, y)], spec)
        loss = softplus_neg(margin)
        exact = 100 * (softplus_neg(margin - eps * per_eps) - loss) / (1 + loss)
        assert exact * (1 - 1e-8) <= res.value <= exact * (1 + 1e-12)
        assert res.radius is not None and res.radius <= eps
        values.append(res.value)
    assert values == sorted(values) and values[0] > 0


def test_keskar_on_a_quadratic_reaches_the_best_vertex() -> None:
    n, eps = 6, 0.3
    model = quadratic(n, seed=1)
    bound = eps * (model.w.detach().abs() + 1)
    # Convex maximisation over a box: the maximum sits at one of the 2^n vertices; L(w*) = 0.
    vertices = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=torch.float64) * bound
    exact = 100 * float((0.5 * torch.einsum("vi,ij,vj->v", vertices, model.a, vertices)).max())
    spec = Spec.parse(f"keskar-linf-elementwise:rho={eps},eta=1.0,n_iters=30,init=random,n_restarts=4")
    res = measure(model, [(torch.zeros(2, 1), torch.zeros(2))], spec, loss_fn=mean_loss)
    assert 0.98 * exact <= res.value <= exact * (1 + 1e-12)


def test_keskar_grows_with_eps_on_a_network() -> None:
    net, data = mlp()
    values = [measure(net, data, Spec.parse(f"keskar-linf-elementwise:rho={eps},eta=1.0")).value for eps in EPSILONS]
    assert values == sorted(values) and values[0] > 0


# --------------------------------------------------------------- PAC-Bayes
@pytest.mark.parametrize(("scaling", "eta"), [("standard", 0.0), ("elementwise", 0.0), ("elementwise", 0.05)])
def test_pacbayes_loss_target_on_a_quadratic(scaling: str, eta: float) -> None:
    model, d = quadratic(8, seed=2), 0.05
    c0 = torch.ones(8, dtype=torch.float64) if scaling == "standard" else model.w.detach().abs()
    # E[L] = (sigma^2 tr(D0 A D0) + eta^2 tr(A)) / 2 = d.
    exact = float(torch.diag(model.a) @ c0.square()) / (2 * d - eta**2 * float(torch.trace(model.a)))
    spec = Spec.parse(f"pacbayes-l2-{scaling}:rho={d},eta={eta},target=loss,n_iters=100,antithetic=true")
    res = measure(model, [(torch.zeros(2, 1), torch.zeros(2))], spec, loss_fn=mean_loss)
    assert res.stderr is not None and 0 < res.stderr < 0.2 * exact
    assert abs(res.value - exact) <= 4 * res.stderr
    assert res.details["rise"][0] <= d


def test_pacbayes_error_target_on_a_linear_classifier() -> None:
    g = torch.Generator().manual_seed(4)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(64, 6, generator=g, dtype=torch.float64)
    x = x * torch.sign(x @ w)[:, None]  # every example right: clean error 0
    d = 0.1
    # Under w + sigma N(0, I) example i is misclassified with probability Phi(-m_i / (sigma ||x_i||)).
    margins, norms = x @ w, x.norm(dim=1)
    normal = torch.distributions.Normal(0.0, 1.0)

    def rise(sigma: float) -> float:
        return float(normal.cdf(-margins / (sigma * norms)).mean())

    lo, hi = 1e-3, 1e3
    for _ in range(100):
        lo, hi = (math.sqrt(lo * hi), hi) if rise(math.sqrt(lo * hi)) <= d else (lo, math.sqrt(lo * hi))
    exact = 1 / lo**2
    spec = Spec.parse(f"pacbayes-l2-standard:rho={d},n_iters=100,m=64,n_examples=64")
    res = measure(TwoLogit(w), (x, torch.ones(64, dtype=torch.long)), spec)
    assert res.stderr is not None and res.stderr < 0.2 * exact
    assert abs(res.value - exact) <= 4 * res.stderr
    assert res.error_increase is not None and res.error_increase <= d


@pytest.mark.parametrize(("scaling", "eta"), [("standard", 0.0), ("elementwise", 0.0), ("elementwise", 0.01)])
def test_pacbayes_worst_case_analogue_on_one_logistic_example(scaling: str, eta: float) -> None:
    w, x, y = one_example()
    d = 0.2
    margin = float(x[0] @ w)
    c0 = torch.ones_like(w) if scaling == "standard" else w.abs()
    # Box |delta_i| <= alpha c0_i + eta: the margin drops by sum_i (alpha c0_i + eta) |x_i|; the loss rises by d
    # when the margin reaches -log(expm1(L0 + d)).
    drop = margin + math.log(math.expm1(softplus_neg(margin) + d))
    alpha = (drop - eta * float(x[0].abs().sum())) / float(c0 @ x[0].abs())
    spec = Spec.parse(f"pacbayes-linf-{scaling}:rho={d},eta={eta},target=loss,n_iters=20")
    res = measure(TwoLogit(w), [(x, y)], spec)
    assert res.value == pytest.approx(1 / alpha**2, rel=2e-3)
    assert res.details["sigma"][0] <= alpha and res.details["rise"][0] <= d


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pacbayes_flatness_falls_as_the_tolerated_rise_grows(norm: str) -> None:
    net, data = mlp()
    values = [measure(net, data, Spec.parse(f"pacbayes-{norm}:rho={d},target=loss,n_iters=8")).value
              for d in [0.02, 0.1, 0.5]]
    assert values == sorted(values, reverse=True)


# ---------------------------------------------------------- BatchNorm folding
class BNNet(nn.Module):
    """Conv (no bias) -> BN, ConvTranspose -> BN, Linear -> BN1d: every foldable pairing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2)
        self.bn_up = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 8 * 8, 5)
        self.bn_fc = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = torch.relu(self.bn_up(self.up(h)))
        return self.head(torch.relu(self.bn_fc(self.fc(h.flatten(1)))))


def with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def images(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_folding_preserves_the_function(dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    model = with_statistics(BNNet()).to(dtype).eval()
    x, y = images()
    x = x.to(dtype)
    folded = fold_batchnorm(model, Batch((x,), {}, y))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x_new = torch.randn(16, 1, 4, 4, dtype=dtype)
    with torch.no_grad():
        assert float((folded(x_new) - model(x_new)).abs().max()) <= tol * float(model(x_new).abs().max())


class PreActivation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(torch.relu(self.conv(x))).flatten(1))


class SharedOutput(PreActivation):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head((self.bn(h) + h).flatten(1))


@pytest.mark.parametrize(("model", "message"), [(PreActivation, "does not directly follow"),
                                                (SharedOutput, "changed the model's output")])
def test_unfoldable_batchnorm_is_refused(model: type[nn.Module], message: str) -> None:
    torch.manual_seed(0)
    net = with_statistics(model())
    with pytest.raises(SharpnessError, match=message):
        measure(net, [images()], Spec.parse("worst-l2:rho=0.01,fold_bn=true"))


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


@torch.no_grad()
def rescale_channels(model: ConvBN, a: torch.Tensor) -> None:
    """conv *= a per channel with mu *= a and (var + eps) *= a^2: the eval-mode function is unchanged."""
    model.conv.weight.mul_(a.view(-1, 1, 1, 1))
    model.conv.bias.mul_(a)
    model.bn.running_mean.mul_(a)
    model.bn.running_var.copy_(a.square() * (model.bn.running_var + model.bn.eps) - model.bn.eps)


@torch.no_grad()
def shift_channels(model: ConvBN, t: torch.Tensor) -> None:
    """conv bias += t with mu += t: the eval-mode function is unchanged."""
    model.conv.bias.add_(t)
    model.bn.running_mean.add_(t)


@pytest.mark.parametrize(("transform", "scaling"), [
    (rescale_channels, "standard"),     # no scaling is invariant to this without folding
    (shift_channels, "elementwise"),    # elementwise is invariant to rescalings only
])
def test_folding_makes_sharpness_invariant_to_batchnorm_reparametrisations(transform, scaling: str) -> None:
    torch.manual_seed(0)
    model = with_statistics(ConvBN()).double().eval()
    x, y = images()
    data = [(x.double(), y)]
    other = with_statistics(ConvBN()).double().eval()
    other.load_state_dict(model.state_dict())
    transform(other, torch.tensor([3.0, 0.5, 2.0], dtype=torch.float64))
    with torch.no_grad():
        assert torch.allclose(other(data[0][0]), model(data[0][0]), atol=1e-12)
    spec = Spec.parse(f"worst-l2-{scaling}:rho=0.05,n_iters=10")
    folded = spec.replace(fold_bn=True)
    assert measure(other, data, folded).value == pytest.approx(measure(model, data, folded).value, rel=1e-9)
    assert measure(other, data, spec).value != pytest.approx(measure(model, data, spec).value, rel=1e-3)


def test_elementwise_sharpness_of_a_channel_rescaling_needs_no_folding() -> None:
    """Honest baseline: with mu and var rescaled too, elementwise sharpness is already invariant."""
    torch.manual_seed(0)
    model = with_statistics(ConvBN()).double().eval()
    other = with_statistics(ConvBN()).double().eval()
    other.load_state_dict(model.state_dict())
    rescale_channels(other, torch.tensor([3.0, 0.5, 2.0], dtype=torch.float64))
    x, y = images()
    spec = Spec.parse("worst-l2-elementwise:rho=0.05,n_iters=10")
    assert measure(other, [(x.double(), y)], spec).value == pytest.approx(
        measure(model, [(x.double(), y)], spec).value, rel=1e-9)


# ------------------------------------------------------------ forms and restoration
NEW_SPECS = [
    "trace-l2-elementwise:rho=1.0,n_iters=4",
    "eigen-l2-filterwise:rho=1.0,n_iters=4,hvp=finite_difference",
    "keskar-linf-elementwise:rho=0.001,eta=1.0,n_iters=4",
    "keskar-l2-standard:rho=0.01,n_iters=4,subspace=5",
    "pacbayes-l2-elementwise:rho=0.1,eta=0.001,n_iters=4",
    "pacbayes-linf-standard:rho=0.1,n_iters=3,target=loss",
    "worst-linf-elementwise:rho=0.002,n_iters=4,fold_bn=true",
    "trace-l2-standard:rho=1.0,n_iters=3,fold_bn=true",
    "trace-l2-elementwise:rho=1.0,n_iters=6,estimator=hutchpp",
]


@pytest.mark.parametrize("text", NEW_SPECS)
def test_new_specs_round_trip(text: str) -> None:
    spec = Spec.parse(text)
    assert str(spec) == text
    assert Spec.from_json(spec.to_json()) == spec and len(spec.id) == 12


def test_existing_canonical_forms_are_unchanged() -> None:
    assert str(Spec(case="worst", norm="linf", rho=0.002)) == "worst-linf-elementwise:rho=0.002"
    spec = Spec(case="average", norm="l2", rho=0.1, antithetic=True)
    assert str(spec) == "average-l2-elementwise:rho=0.1,antithetic=true"


@pytest.mark.parametrize(("text", "message"), [
    ("trace-linf:rho=1", "norm 'l2' and rho=1"),
    ("eigen-l2:rho=0.5", "norm 'l2' and rho=1"),
    ("worst-l2:rho=0.1,hvp=finite_difference", "applies only to case trace or eigen"),
    ("average-l2:rho=0.1,subspace=3", "applies only to case keskar"),
    ("keskar-linf:rho=0.1,target=loss", "applies only to case pacbayes"),
    ("pacbayes-l2:rho=1.5", "must be < 1"),
    ("keskar-linf-filterwise:rho=0.1,subspace=3", "no filters"),
    ("trace-l2:rho=1,hvp=exact", "unknown hvp"),
    ("pacbayes-l2:rho=0.1,antithetic=true,n_iters=5", "even n_iters"),
    ("eigen-l2:rho=1,estimator=hutchpp", "applies only to case trace"),
    ("trace-l2:rho=1,estimator=hutchpp,n_iters=2", "n_iters >= 3"),
    ("trace-l2:rho=1,estimator=hutch", "unknown estimator"),
])
def test_bad_new_specs_are_refused(text: str, message: str) -> None:
    with pytest.raises(SharpnessError, match=message):
        Spec.parse(text)


@pytest.mark.parametrize("text", NEW_SPECS)
def test_model_is_restored_bit_for_bit(text: str) -> None:
    torch.manual_seed(0)
    model = with_statistics(ConvBN())
    model.conv.weight.grad = torch.randn_like(model.conv.weight)
    model.head.bias.requires_grad_(False)
    model.train()
    x, _ = images(16)
    with torch.no_grad():
        y = model.eval()(x).argmax(dim=1)  # right labels: an error rise of 0.1 is reachable
    model.train()
    model.bn.eval()  # a mixed mode must survive too
    before = snapshot(model)
    res = measure(model, (x, y), Spec.parse(text).replace(m=8, n_examples=16))
    assert_restored(model, before)
    assert math.isfinite(res.value) and len(res.per_batch) == 2
    json.dumps(res.to_dict(), allow_nan=False)
