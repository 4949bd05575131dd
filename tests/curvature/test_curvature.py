"""Hessian trace and top eigenvalue of D H D against the exact Hessian, and the second-order limits."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sharpness import Spec, measure

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).square().mean()


def scale(model: nn.Module, scaling: str) -> torch.Tensor:
    """c(w), written out independently of the package: 1, |w|, or the row norm of each 2-d weight."""
    parts = []
    for p in model.parameters():
        w = p.detach()
        if scaling == "standard":
            parts.append(torch.ones_like(w))
        elif scaling == "filterwise" and w.dim() == 2:
            parts.append(w.norm(dim=1, keepdim=True).expand_as(w))
        else:
            parts.append(w.abs())
    return torch.cat([t.reshape(-1) for t in parts])


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def exact_dhd(model: nn.Module, batch: Batch, loss_fn: LossFn, scaling: str) -> torch.Tensor:
    """D H D from torch.autograd.functional.hessian over the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def loss_at(flat: torch.Tensor) -> torch.Tensor:
        views = [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in params]), params)]
        return loss_fn(functional_call(model, dict(zip(names, views)), (batch[0],)), batch[1])

    h = torch.autograd.functional.hessian(loss_at, flat_params(model))
    c = scale(model, scaling)
    return c[:, None] * h * c[None, :]


def tanh_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        net[0].weight[0, 0] = 0.0  # c = 0 there for elementwise: never perturbed
    return net


def two_batches(seed: int = 0) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(24, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,), generator=g))
            for _ in range(2)]


@pytest.mark.parametrize("hvp", ["double_backward", "finite_difference"])
@pytest.mark.parametrize("scaling", ["standard", "elementwise", "filterwise"])
def test_trace_and_eigen_match_the_exact_hessian(scaling: str, hvp: str) -> None:
    model, batches = tanh_mlp(), two_batches()
    exact = [exact_dhd(model, b, F.cross_entropy, scaling) for b in batches]
    trace = measure(model, batches, Spec.parse(f"trace-l2-{scaling}:rho=1,n_iters=48,hvp={hvp}"))
    eigen = measure(model, batches, Spec.parse(f"eigen-l2-{scaling}:rho=1,n_iters=40,hvp={hvp}"))

    true_trace = sum(float(torch.trace(a)) for a in exact) / 2
    assert trace.stderr is not None and 0 < trace.stderr < 0.5 * abs(true_trace)
    assert abs(trace.value - true_trace) <= 4 * trace.stderr
    assert trace.details["hvp"] == hvp and trace.error_increase is None

    assert eigen.details["hvp"] == hvp and eigen.details["converged"]
    for value, residual, a in zip(eigen.per_batch, eigen.details["residual"], exact):
        top = float(torch.linalg.eigvalsh(a)[-1])
        # A Ritz value never exceeds lambda_max; the residual bounds the gap once converged.
        assert -1e-8 * top <= top - value <= residual + 1e-8 * top
    assert eigen.value == pytest.approx(sum(eigen.per_batch) / 2, rel=1e-15)


def test_hutchinson_error_is_honest_over_seeds() -> None:
    """About 95% of two-sigma intervals cover the exact trace (checked loosely over 20 seeds)."""
    model, batches = tanh_mlp(), two_batches()[:1]
    true_trace = float(torch.trace(exact_dhd(model, batches[0], F.cross_entropy, "elementwise")))
    z = [(r.value - true_trace) / r.stderr for r in (
        measure(model, batches, Spec.parse(f"trace-l2:rho=1,n_iters=16,seed={s}")) for s in range(20))
        if r.stderr is not None]
    assert len(z) == 20 and sum(abs(v) <= 2 for v in z) >= 16
    assert 0.5 < math.sqrt(sum(v * v for v in z) / len(z)) < 1.6


def low_rank_quadratic(n: int, rank: int) -> tuple[nn.Module, torch.Tensor]:
    """Loss 0.5 w^T A w (summed over a batch of one) with A = B B^T of the given rank."""
    g = torch.Generator().manual_seed(rank)
    b = torch.randn(n, rank, generator=g, dtype=torch.float64)
    model = nn.Linear(n, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, n, generator=g, dtype=torch.float64))
    return model, b @ b.T


@pytest.mark.parametrize(("n", "rank", "n_iters"), [(12, 1, 3), (12, 3, 9), (30, 5, 16)])
def test_hutchpp_is_exact_when_the_sketch_holds_the_whole_spectrum(n: int, rank: int, n_iters: int) -> None:
    model, a = low_rank_quadratic(n, rank)
    x = torch.ones(1, n, dtype=torch.float64)

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # 0.5 w^T A w, Hessian A
        w = model.weight[0]
        return 0.5 * w @ a @ w + 0 * out.sum()

    spec = Spec.parse(f"trace-l2-standard:rho=1,n_iters={n_iters},m=1,n_examples=1")
    pp = measure(model, [(x, torch.zeros(1))], spec.replace(estimator="hutchpp"), loss_fn=loss)
    plain = measure(model, [(x, torch.zeros(1))], spec, loss_fn=loss)
    assert pp.value == pytest.approx(float(torch.trace(a)), rel=1e-10)
    one_residual_probe = n_iters - 2 * (n_iters // 3) == 1  # no variance from one sample
    assert (pp.stderr is None) == one_residual_probe
    assert one_residual_probe or pp.stderr < 1e-10 * float(torch.trace(a))
    assert abs(plain.value - float(torch.trace(a))) > 1e-3 * float(torch.trace(a))  # Hutchinson is not exact
    assert pp.details["estimator"] == "hutchpp" and pp.n_backward == n_iters + 1  # + the graph of the gradient


def test_hutchpp_beats_hutchinson_at_equal_cost_and_reports_an_honest_error() -> None:
    model, batches = tanh_mlp(), two_batches()[:1]
    true_trace = float(torch.trace(exact_dhd(model, batches[0], F.cross_entropy, "elementwise")))
    errors: dict[str, list[float]] = {}
    for estimator in ("hutchinson", "hutchpp"):
        runs = [measure(model, batches, Spec.parse(f"trace-l2:rho=1,n_iters=24,seed={s},estimator={estimator}"))
                for s in range(20)]
        errors[estimator] = [r.value - true_trace for r in runs]
        z = [(r.value - true_trace) / (r.stderr or math.inf) for r in runs]
        assert sum(abs(v) <= 2 for v in z) >= 16
    rms = {k: math.sqrt(sum(e * e for e in v) / len(v)) for k, v in errors.items()}
    assert abs(sum(errors["hutchpp"]) / 20) < 2 * rms["hutchpp"] / math.sqrt(20)  # no visible bias
    assert rms["hutchpp"] < 0.75 * rms["hutchinson"]


class DeepLinear(nn.Module):
    """x -> W2 W1 x, a non-quadratic loss in (W1, W2) with exact least-squares critical points."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        self.w1 = nn.Parameter(w1)
        self.w2 = nn.Parameter(w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w1.T @ self.w2.T


def least_squares_point(shift: float = 0.0) -> tuple[DeepLinear, list[Batch]]:
    """W2 W1 is the least-squares map (gradient exactly 0), W2 moved by ``shift`` off it."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = x @ torch.randn(3, 2, generator=g, dtype=torch.float64) + 0.3 * torch.randn(40, 2, generator=g,
                                                                                    dtype=torch.float64)
    b = torch.linalg.lstsq(x, y).solution.T  # 2 x 3
    w1 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w2 = b @ torch.linalg.pinv(w1) + shift * torch.randn(2, 4, generator=g, dtype=torch.float64)
    return DeepLinear(w1, w2), [(x, y)]


def gradient_u(model: nn.Module, batch: Batch, scaling: str) -> torch.Tensor:
    loss = mse(model(batch[0]), batch[1])
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    return scale(model, scaling) * g


RHOS = [0.4, 0.1, 0.025]


def test_average_l2_tends_to_half_rho_squared_trace_at_a_critical_point() -> None:
    model, data = least_squares_point()
    assert float(gradient_u(model, data[0], "elementwise").abs().max()) < 1e-12
    dhd = exact_dhd(model, data[0], mse, "elementwise")
    trace = measure(model, data, Spec.parse("trace-l2:rho=1,n_iters=64"), loss_fn=mse)
    assert abs(trace.value - float(torch.trace(dhd))) <= 4 * (trace.stderr or 0.0)

    ratios, stderrs = [], []
    for rho in RHOS:
        res = measure(model, data, Spec(case="average", norm="l2", rho=rho, n_iters=400, antithetic=True),
                      loss_fn=mse)
        limit = rho**2 / 2 * float(torch.trace(dhd))
        ratios.append(res.value / limit)
        stderrs.append((res.stderr or 0.0) / limit)
    # Same draws at every rho: the fourth-order term fades like rho^2, what is left is Monte-Carlo error.
    gaps = [abs(r - ratios[-1]) for r in ratios[:-1]]
    assert gaps[0] > 0.05 and gaps[1] < gaps[0] / 8
    assert abs(ratios[-1] - 1) <= 4 * stderrs[-1]


def test_worst_l2_tends_to_half_rho_squared_lambda_max_at_a_critical_point() -> None:
    model, data = least_squares_point()
    top = float(torch.linalg.eigvalsh(exact_dhd(model, data[0], mse, "elementwise"))[-1])
    eigen = measure(model, data, Spec.parse("eigen-l2:rho=1,n_iters=20"), loss_fn=mse)
    assert eigen.value == pytest.approx(top, rel=1e-9)
    ratios = []
    for rho in RHOS:
        # The gradient is zero: the search must start from random points.
        spec = Spec(case="worst", norm="l2", rho=rho, n_iters=40, init="random", n_restarts=3)
        ratios.append(measure(model, data, spec, loss_fn=mse).value / (rho**2 / 2 * top))
    # The cubic term of the loss leaves a gap linear in rho: it shrinks fourfold with rho.
    gaps = [abs(r - 1) for r in ratios]
    assert gaps[0] > 0.1 and gaps[-1] < 0.015
    assert all(0.2 < later / earlier < 0.3 for earlier, later in itertools.pairwise(gaps))


def test_worst_l2_is_first_order_away_from_a_critical_point() -> None:
    model, data = least_squares_point(shift=0.2)
    slope = float(torch.linalg.vector_norm(gradient_u(model, data[0], "elementwise")))
    top = float(torch.linalg.eigvalsh(exact_dhd(model, data[0], mse, "elementwise"))[-1])
    first, second = [], []
    for rho in [0.1, 0.01, 0.001]:
        value = measure(model, data, Spec(case="worst", norm="l2", rho=rho, n_iters=20), loss_fn=mse).value
        first.append(value / (rho * slope))
        second.append(value / (rho**2 / 2 * top))
    assert abs(first[-1] - 1) < 0.01 and abs(first[-1] - 1) < abs(first[0] - 1)
    # The second-order formula does not describe this regime: the ratio grows like 1 / rho.
    assert second[-1] > 10 * second[0] > 1


class TinyTransformer(nn.Module):
    """One attention block; ``fused`` uses F.scaled_dot_product_attention (no double backward on CPU)."""

    def __init__(self, fused: bool, vocab: int = 11, d: int = 8, heads: int = 2, k: int = 3) -> None:
        super().__init__()
        self.fused, self.heads = fused, heads
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, k)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1) @ v
        h = self.norm(h + self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return self.head(h.mean(dim=1))


def token_data() -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 11, (12, 5), generator=g), torch.randint(0, 3, (12,), generator=g))]


@pytest.mark.parametrize("case", ["trace", "eigen"])
def test_fused_attention_gets_an_exact_hessian_through_the_math_kernel(case: str) -> None:
    torch.manual_seed(0)
    fused = TinyTransformer(fused=True).double()
    eager = TinyTransformer(fused=False).double()
    eager.load_state_dict(fused.state_dict())
    spec = Spec.parse(f"{case}-l2:rho=1,n_iters=12")
    via_fallback, via_autograd = measure(fused, token_data(), spec), measure(eager, token_data(), spec)
    assert via_fallback.details["hvp"] == "math_attention"
    assert via_autograd.details["hvp"] == "double_backward"
    assert via_fallback.value == pytest.approx(via_autograd.value, rel=1e-10)
    # Finite differences on demand: same probes, only the difference error separates them.
    assert measure(fused, token_data(), spec.replace(hvp="finite_difference")).value == pytest.approx(
        via_autograd.value, rel=1e-6)
    with pytest.raises(RuntimeError, match="not implemented"):
        measure(fused, token_data(), spec.replace(hvp="double_backward"))


class RBFNet(nn.Module):
    """Logits -||h - centre_k||^2; ``cdist`` has no second derivative in autograd."""

    def __init__(self, cdist: bool) -> None:
        super().__init__()
        self.cdist = cdist
        self.inner = nn.Linear(4, 6)
        self.centres = nn.Parameter(torch.randn(3, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inner(x))
        if self.cdist:
            return -torch.cdist(h, self.centres).square()
        return -(h[:, None, :] - self.centres).square().sum(dim=-1)


def test_an_op_without_second_derivative_falls_back_to_finite_differences() -> None:
    torch.manual_seed(0)
    with_cdist, plain = RBFNet(cdist=True).double(), RBFNet(cdist=False).double()
    plain.load_state_dict(with_cdist.state_dict())
    spec = Spec.parse("trace-l2:rho=1,n_iters=12")
    fallback, exact = measure(with_cdist, two_batches(), spec), measure(plain, two_batches(), spec)
    assert fallback.details["hvp"] == "finite_difference" and exact.details["hvp"] == "double_backward"
    assert fallback.value == pytest.approx(exact.value, rel=1e-6)
