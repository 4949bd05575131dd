"""Diagonal linear networks: closed forms against autograd and measure(), invariance, the flip."""

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sharpness import SharpnessError, Spec, measure
from sharpness.toy import cli
from sharpness.toy.diagonal import (
    DiagonalConfig,
    DiagonalNet,
    adaptive_hessian_trace,
    average_sharpness,
    flow_hessian_trace,
    flow_limit,
    full_hessian,
    half_mse,
    hessian_trace,
    make_regression,
    run_task,
    top_eigenvalue,
    train_gd,
    whitened_design,
)


def random_point(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)


def adaptive(h: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    c = torch.cat([u.abs(), v.abs()])
    return c[:, None] * h * c


@pytest.mark.parametrize(("target", "spread", "interpolating", "seed"), [
    ("sparse", 1.0, True, 0), ("dense", 1.0, False, 1), ("dense", 5.0, False, 2), ("sparse", 3.0, True, 3),
])
def test_trace_forms_hold_at_any_point(target: str, spread: float, interpolating: bool, seed: int) -> None:
    data = make_regression(7, 12, target, scale_spread=spread, seed=seed)
    u, v = random_point(12, seed)
    y = data.x @ (u * v) if interpolating else data.y
    h = full_hessian(u, v, data.x, y)
    assert float(torch.trace(h)) == pytest.approx(float(hessian_trace(u, v, data.x)), rel=1e-12)
    assert float(torch.trace(adaptive(h, u, v))) == pytest.approx(float(adaptive_hessian_trace(u, v, data.x)),
                                                                   rel=1e-12)
    # Unit-norm columns: tr(DHD) = 2 ||beta||_2^2 exactly.
    if spread == 1.0:
        assert float(adaptive_hessian_trace(u, v, data.x)) == pytest.approx(2 * float((u * v).pow(2).sum()), rel=1e-12)


@pytest.mark.parametrize(("n", "d", "seed"), [(8, 8, 0), (20, 6, 1), (50, 10, 2)])
def test_eigenvalue_forms_on_a_whitened_design(n: int, d: int, seed: int) -> None:
    x = whitened_design(n, d, seed)
    u, v = random_point(d, seed)
    h = full_hessian(u, v, x, x @ (u * v))
    assert float(torch.linalg.eigvalsh(h)[-1]) == pytest.approx(float(top_eigenvalue(u, v, "standard")), rel=1e-10)
    assert float(torch.linalg.eigvalsh(adaptive(h, u, v))[-1]) == pytest.approx(
        2 * float((u * v).abs().max()) ** 2, rel=1e-10)


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 3.0])
def test_flow_limit_interpolates_and_conserves(alpha: float) -> None:
    data = make_regression(10, 30, "sparse", seed=4)
    nets = flow_limit(data.x, data.y, torch.tensor([alpha], dtype=torch.float64))
    assert float(nets.train_loss[0]) < 1e-18
    assert torch.allclose(nets.u.pow(2) - nets.v.pow(2), torch.full((1, 30), alpha**2, dtype=torch.float64),
                          rtol=1e-10)
    flow = flow_hessian_trace(nets.beta, torch.tensor([alpha], dtype=torch.float64), data.x)
    assert float(flow[0]) == pytest.approx(float(hessian_trace(nets.u, nets.v, data.x)[0]), rel=1e-10)


def test_regimes_rich_is_two_l1_kernel_is_d_alpha_squared() -> None:
    data = make_regression(10, 30, "sparse", seed=5)
    nets = flow_limit(data.x, data.y, torch.tensor([1e-4, 100.0]))
    trace = hessian_trace(nets.u, nets.v, data.x)
    assert float(trace[0]) == pytest.approx(2 * float(nets.beta[0].abs().sum()), rel=1e-3)
    assert float(trace[1]) == pytest.approx(30 * 100.0**2, rel=1e-3)
    # Rich regime recovers the sparse target (n = 10 >= what basis pursuit needs for 3 non-zeros); kernel does not.
    test = data.test_loss(nets.beta)
    assert float(test[0]) < 1e-3 < 0.1 < float(test[1])


def test_gradient_descent_reaches_target_loss_near_the_flow_limit() -> None:
    data = make_regression(8, 20, "sparse", seed=6)
    alphas = torch.tensor([0.01, 2.0], dtype=torch.float64)
    gd = train_gd(data.x, data.y, alphas, target_loss=1e-6, max_move=0.01)
    flow = flow_limit(data.x, data.y, alphas)
    assert bool((gd.train_loss <= 1e-6).all())
    assert float((gd.beta - flow.beta).norm(dim=1).max()) < 0.02 * float(flow.beta.norm(dim=1).min())
    drift = ((gd.u.pow(2) - gd.v.pow(2)) / alphas[:, None] ** 2 - 1).abs().max()
    assert float(drift) < 0.1


@pytest.mark.parametrize(("scaling", "norm", "rho"), [
    ("standard", "l2", 0.2), ("elementwise", "l2", 0.3), ("standard", "linf", 0.3), ("elementwise", "linf", 0.5),
])
def test_measured_average_case_matches_the_exact_expectation(scaling: str, norm: str, rho: float) -> None:
    data = make_regression(12, 16, "dense", scale_spread=2.0, seed=7)
    u, v = random_point(16, 7)
    spec = Spec(case="average", norm=norm, rho=rho, scaling=scaling, n_iters=600, seed=1)
    res = measure(DiagonalNet(u, v), [(data.x, data.y)], spec, loss_fn=half_mse)
    exact = float(average_sharpness(u, v, data.x, rho, scaling, norm))
    assert res.stderr is not None
    assert abs(res.value - exact) < 4 * res.stderr


@pytest.mark.parametrize("scaling", ["standard", "elementwise"])
def test_measured_worst_case_is_the_top_eigenvalue_on_a_whitened_design(scaling: str) -> None:
    x = whitened_design(24, 6, seed=8)
    u, v = random_point(6, 8)
    rho = 0.01
    spec = Spec(case="worst", norm="l2", rho=rho, scaling=scaling, n_iters=40, init="random",
                n_restarts=2)
    res = measure(DiagonalNet(u, v), [(x, x @ (u * v))], spec, loss_fn=half_mse)
    second_order = 0.5 * rho**2 * float(top_eigenvalue(u, v, scaling))
    assert res.value == pytest.approx(second_order, rel=0.03)


@pytest.mark.parametrize("scaling", ["standard", "elementwise"])
def test_measured_curvature_cases_match_the_closed_forms(scaling: str) -> None:
    x = whitened_design(30, 8, seed=10)
    u, v = random_point(8, 10)
    batch = [(x, x @ (u * v))]
    eigen = measure(DiagonalNet(u, v), batch, Spec(case="eigen", norm="l2", rho=1.0, scaling=scaling, n_iters=20),
                    loss_fn=half_mse)
    assert eigen.value == pytest.approx(float(top_eigenvalue(u, v, scaling)), rel=1e-9)
    trace = measure(DiagonalNet(u, v), batch, Spec(case="trace", norm="l2", rho=1.0, scaling=scaling, n_iters=200),
                    loss_fn=half_mse)
    exact = hessian_trace(u, v, x) if scaling == "standard" else adaptive_hessian_trace(u, v, x)
    assert trace.stderr is not None and abs(trace.value - float(exact)) < 4 * trace.stderr


def rescaled(u: torch.Tensor, v: torch.Tensor, a: torch.Tensor | float) -> DiagonalNet:
    return DiagonalNet(a * u, v / a)


@pytest.mark.parametrize("a", [10.0, 0.05, "per-coordinate"])
@pytest.mark.parametrize(("case", "init"), [("worst", "zero"), ("worst", "random"), ("average", "zero")])
def test_adaptive_sharpness_is_invariant_to_rescaling_u_and_v(a: float | str, case: str, init: str) -> None:
    data = make_regression(9, 14, "dense", seed=9)
    u, v = random_point(14, 9)
    factor: torch.Tensor | float = (torch.logspace(-1, 1, 14, dtype=torch.float64) if a == "per-coordinate"
                                    else float(a))
    batch = [(data.x, data.y)]
    kwargs = {"case": case, "norm": "l2", "rho": 0.1, "n_iters": 30, "init": init, "seed": 3}
    adaptive_spec = Spec(scaling="elementwise", **kwargs)
    standard_spec = Spec(scaling="standard", **kwargs)
    before = measure(DiagonalNet(u, v), batch, adaptive_spec, loss_fn=half_mse).value
    after = measure(rescaled(u, v, factor), batch, adaptive_spec, loss_fn=half_mse).value
    assert after == pytest.approx(before, rel=1e-9)
    std_before = measure(DiagonalNet(u, v), batch, standard_spec, loss_fn=half_mse).value
    std_after = measure(rescaled(u, v, factor), batch, standard_spec, loss_fn=half_mse).value
    assert abs(std_after / std_before - 1) > 0.1


@pytest.mark.parametrize(("target", "support_scale", "sign"), [("sparse", 1.0, 1), ("dense", 1.0, -1),
                                                               ("sparse", 0.25, -1)])
def test_which_sharpness_tracks_test_loss_flips_with_the_data(target: str, support_scale: float, sign: int) -> None:
    config = DiagonalConfig(n=20, d=50, n_nets=8, alpha_min=1e-3, alpha_max=10.0, n_draws=20, n_iters=5,
                            n_restarts=1, trainer="flow")
    tau = run_task(config, {"target": target, "support_scale": support_scale})["kendall_tau"]
    assert sign * tau["hessian_trace"] > 0.5 and sign * tau["average_standard"] > 0.5
    assert sign * tau["adaptive_trace"] < -0.5 and sign * tau["worst_adaptive"] < -0.5


@pytest.mark.parametrize(("call", "message"), [
    (lambda: make_regression(5, 10, sparsity=1.0), "sparsity"),
    (lambda: make_regression(5, 10, "banana"), "target"),
    (lambda: make_regression(5, 10, scale_spread=0.5), "scale_spread"),
    (lambda: whitened_design(3, 5), "n >= d"),
    (lambda: DiagonalNet(torch.zeros(3), torch.zeros(4)), "shape"),
])
def test_bad_input_is_named(call: Callable[[], object], message: str) -> None:
    with pytest.raises(SharpnessError, match=message):
        call()


def test_command_writes_json_and_figure(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "toy"
    args = parser.parse_args(["toy", "diagonal", "--out", str(out), "--n", "10", "--d", "20", "--n-nets", "4",
                              "--n-draws", "4", "--n-iters", "3", "--n-restarts", "1", "--trainer", "flow"])
    assert args.func(args) == 0
    results = json.loads((out / "diagonal.json").read_text())
    assert set(results["tasks"]) == {"sparse", "dense", "sparse_random_scales", "sparse_weak_support"}
    assert all(len(t["networks"]["test_loss"]) == 4 for t in results["tasks"].values())
    assert max(results["checks"].values()) < 1e-10
    assert all(math.isfinite(v) for v in results["tasks"]["sparse"]["kendall_tau"].values())
    assert (out / "diagonal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
