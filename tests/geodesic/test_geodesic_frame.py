"""The block algebra of geodesic sharpness against its defining properties (float64, random blocks).

Cases: both metrics, several shapes (n, m, h), relaxation off and on. A transformation ``A`` acts
by ``(G, H, xi_G, xi_H) -> (G A^-1, H A^T, xi_G A^-1, xi_H A^T)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

from sharpness.geodesic import Frame

SHAPES = [(6, 7, 3), (8, 6, 4), (7, 8, 4)]
METRICS = ["inv", "mix"]


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(params=SHAPES, ids=[f"n{n}-m{m}-h{h}" for n, m, h in SHAPES])
def block(request: pytest.FixtureRequest) -> dict[str, torch.Tensor]:
    n, m, h = request.param
    return {"g": rand(2, n, h, seed=n), "h": rand(2, m, h, seed=m + 10), "xg": rand(2, n, h, seed=1),
            "xh": rand(2, m, h, seed=2), "yg": rand(2, n, h, seed=3), "yh": rand(2, m, h, seed=4),
            "a": rand(2, h, h, seed=5) + 2 * torch.eye(h, dtype=torch.float64), "x": rand(2, h, h, seed=6)}


def moved(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every point and tangent of ``b`` under the group action of ``b['a']``."""
    a_inv, a_t = torch.linalg.inv(b["a"]), b["a"].transpose(-1, -2)
    out = dict(b)
    for k in ("g", "xg", "yg"):
        out[k] = b[k] @ a_inv
    for k in ("h", "xh", "yh"):
        out[k] = b[k] @ a_t
    return out


def close(x: torch.Tensor, y: torch.Tensor, rel: float = 1e-10) -> bool:
    return float((x - y).abs().max()) <= rel * max(1.0, float(y.abs().max()))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_metric_is_positive_and_invariant(block: dict, metric: str, eps: float) -> None:
    f = Frame.at(block["g"], block["h"], metric, eps)
    assert bool((f.inner(block["xg"], block["xh"], block["xg"], block["xh"]) > 0).all())
    if eps == 0:  # the relaxation breaks the invariance on purpose
        t = moved(block)
        f2 = Frame.at(t["g"], t["h"], metric, eps)
        assert close(f.inner(block["xg"], block["xh"], block["yg"], block["yh"]),
                     f2.inner(t["xg"], t["xh"], t["yg"], t["yh"]), 1e-11)


def horizontality_residual(f: Frame, xg: torch.Tensor, xh: torch.Tensor, metric: str) -> float:
    """How far ``xi`` is from the horizontal space as the paper defines it (with its typo fixed)."""
    g, h = f.g, f.h
    sg, sh = g.transpose(-1, -2) @ g, h.transpose(-1, -2) @ h
    if metric == "inv":
        r = xg.transpose(-1, -2) @ g @ sh - sg @ h.transpose(-1, -2) @ xh
    else:
        r = g.transpose(-1, -2) @ xg @ sh - sg @ xh.transpose(-1, -2) @ h
    return float(r.abs().max())


@pytest.mark.parametrize("metric", METRICS)
def test_projection_is_horizontal_orthogonal_idempotent_and_equivariant(block: dict, metric: str) -> None:
    f = Frame.at(block["g"], block["h"], metric, 0.0)
    pg, ph = f.horizontal(block["xg"], block["xh"])
    assert horizontality_residual(f, pg, ph, metric) < 1e-11
    vertical = (-block["g"] @ block["x"], block["h"] @ block["x"].transpose(-1, -2))
    assert float(f.inner(pg, ph, *vertical).abs().max()) < 1e-11
    # the removed part is vertical: orthogonal to every horizontal vector
    qg, qh = f.horizontal(block["yg"], block["yh"])
    assert float(f.inner(block["xg"] - pg, block["xh"] - ph, qg, qh).abs().max()) < 1e-11
    again = f.horizontal(pg, ph)
    assert close(again[0], pg) and close(again[1], ph)
    t = moved(block)
    f2 = Frame.at(t["g"], t["h"], metric, 0.0)
    tg, th = f2.horizontal(t["xg"], t["xh"])
    assert close(tg, pg @ torch.linalg.inv(block["a"]), 1e-9)
    assert close(th, ph @ block["a"].transpose(-1, -2), 1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_relaxed_projection_is_still_an_orthogonal_projection(block: dict, metric: str) -> None:
    f = Frame.at(block["g"], block["h"], metric, 0.5)
    pg, ph = f.horizontal(block["xg"], block["xh"])
    vertical = (-block["g"] @ block["x"], block["h"] @ block["x"].transpose(-1, -2))
    assert float(f.inner(pg, ph, *vertical).abs().max()) < 1e-11
    again = f.horizontal(pg, ph)
    assert close(again[0], pg) and close(again[1], ph)


def test_mix_projection_equals_the_closed_form(block: dict) -> None:
    f = Frame.at(block["g"], block["h"], "mix", 0.0)
    g, h, xg, xh = block["g"], block["h"], block["xg"], block["xh"]
    sg, sh = g.transpose(-1, -2) @ g, h.transpose(-1, -2) @ h
    lam = 0.5 * (xh.transpose(-1, -2) @ h @ torch.linalg.inv(sh) - torch.linalg.inv(sg) @ g.transpose(-1, -2) @ xg)
    pg, ph = f.horizontal(xg, xh)
    assert close(pg, xg + g @ lam) and close(ph, xh - h @ lam.transpose(-1, -2))


def test_the_papers_printed_sylvester_equation_is_not_the_projection(block: dict) -> None:
    """'A Lambda + Lambda A^T = B' (A = S_G S_H) leaves a large residual; the corrected form does not."""
    f = Frame.at(block["g"], block["h"], "inv", 0.0)
    residuals = []
    ours = f.horizontal(block["xg"], block["xh"])[0]
    for i in range(block["g"].shape[0]):
        g, h = block["g"][i].numpy(), block["h"][i].numpy()
        xg, xh = block["xg"][i].numpy(), block["xh"][i].numpy()
        sg, sh = g.T @ g, h.T @ h
        a, b = sg @ sh, sg @ h.T @ xh - xg.T @ g @ sh
        printed = scipy.linalg.solve_sylvester(a, a.T, b)
        corrected = scipy.linalg.solve_sylvester(a, a, b).T
        for lam in (printed, corrected):
            pg, ph = xg + g @ lam, xh - h @ lam.T
            residuals.append(float(np.abs(pg.T @ g @ sh - sg @ h.T @ ph).max()))
        assert np.allclose(ours[i].numpy(), xg + g @ corrected, atol=1e-10)
    printed_res, corrected_res = residuals[0::2], residuals[1::2]
    assert min(printed_res) > 1e-3 and max(corrected_res) < 1e-10


def invariant_loss(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """A smooth function of G H^T only."""
    p = g @ h.transpose(-1, -2)
    return torch.sin(p).sum() + (p ** 2).sum() * 0.1


@pytest.mark.parametrize("metric", METRICS)
def test_riemannian_gradient_is_horizontal_and_equivariant(block: dict, metric: str) -> None:
    def grad_at(b: dict) -> tuple[torch.Tensor, torch.Tensor, Frame]:
        g, h = b["g"].clone().requires_grad_(), b["h"].clone().requires_grad_()
        dg, dh = torch.autograd.grad(invariant_loss(g, h), (g, h))
        f = Frame.at(b["g"], b["h"], metric, 0.0)
        return (*f.riemannian(dg, dh), f)

    rg, rh, f = grad_at(block)
    assert horizontality_residual(f, rg, rh, metric) < 1e-9 * max(1.0, float(rg.abs().max()))
    tg, th, _ = grad_at(moved(block))
    assert close(tg, rg @ torch.linalg.inv(block["a"]), 1e-9)
    assert close(th, rh @ block["a"].transpose(-1, -2), 1e-9)


def geodesic_rhs(metric: str, n: int, m: int, k: int):
    """The exact geodesic equation of each metric, as a first-order system for scipy."""
    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        g, h = y[:n * k].reshape(n, k), y[n * k:(n + m) * k].reshape(m, k)
        vg, vh = y[(n + m) * k:(2 * n + m) * k].reshape(n, k), y[(2 * n + m) * k:].reshape(m, k)
        sg_inv, sh_inv = np.linalg.inv(g.T @ g), np.linalg.inv(h.T @ h)
        if metric == "inv":
            ag = vg @ sg_inv @ (vg.T @ g + g.T @ vg) - g @ sg_inv @ vg.T @ vg
            ah = vh @ sh_inv @ (vh.T @ h + h.T @ vh) - h @ sh_inv @ vh.T @ vh
        else:
            ag = (g @ vh.T @ vh - vg @ (vh.T @ h + h.T @ vh)) @ sh_inv
            ah = (h @ vg.T @ vg - vh @ (vg.T @ g + g.T @ vg)) @ sg_inv
        return np.concatenate([vg.ravel(), vh.ravel(), ag.ravel(), ah.ravel()])
    return rhs


@pytest.mark.parametrize("metric", METRICS)
def test_christoffel_step_matches_the_integrated_geodesic_to_third_order(block: dict, metric: str) -> None:
    g, h = block["g"][:1], block["h"][:1]
    f = Frame.at(g, h, metric, 0.0)
    xg, xh = f.horizontal(block["xg"][:1], block["xh"][:1])
    scale = float(f.inner(xg, xh, xg, xh).sqrt())
    xg, xh = xg / scale, xh / scale
    n, k = g.shape[1:]
    m = h.shape[1]
    errors = []
    for eps in (0.1, 0.01):
        y0 = np.concatenate([t[0].numpy().ravel() for t in (g, h, eps * xg, eps * xh)])
        sol = scipy.integrate.solve_ivp(geodesic_rhs(metric, n, m, k), (0, 1), y0, method="RK45",
                                        rtol=1e-12, atol=1e-14)
        end = torch.from_numpy(sol.y[:(n + m) * k, -1])
        cg, ch = f.half_christoffel(eps * xg, eps * xh)
        step = torch.cat([(g + eps * xg - cg).reshape(-1), (h + eps * xh - ch).reshape(-1)])
        errors.append(float((step - end).abs().max()))
    assert errors[0] / errors[1] > 300  # O(eps^3): x1000 for a tenth of the velocity


@pytest.mark.parametrize("metric", METRICS)
def test_christoffel_step_is_equivariant_and_keeps_the_product_invariant(block: dict, metric: str) -> None:
    def stepped(b: dict) -> tuple[torch.Tensor, torch.Tensor]:
        f = Frame.at(b["g"], b["h"], metric, 0.0)
        xg, xh = 0.3 * b["xg"], 0.3 * b["xh"]
        cg, ch = f.half_christoffel(xg, xh)
        return b["g"] + xg - cg, b["h"] + xh - ch

    g1, h1 = stepped(block)
    g2, h2 = stepped(moved(block))
    assert close(g2, g1 @ torch.linalg.inv(block["a"]), 1e-9)
    assert close(g2 @ h2.transpose(-1, -2), g1 @ h1.transpose(-1, -2), 1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_christoffel_term_is_quadratically_homogeneous_and_zero_at_zero(block: dict, metric: str) -> None:
    """v(t xi) is the point at time t of the geodesic with velocity xi: Gamma(t xi, t xi) = t^2 Gamma(xi, xi)."""
    f = Frame.at(block["g"], block["h"], metric, 0.0)
    cg, ch = f.half_christoffel(block["xg"], block["xh"])
    for t in (0.5, -2.0, 3.0):
        tg, th = f.half_christoffel(t * block["xg"], t * block["xh"])
        assert close(tg, t * t * cg) and close(th, t * t * ch)
    zg, zh = f.half_christoffel(0 * block["xg"], 0 * block["xh"])
    assert float(zg.abs().max()) == 0 and float(zh.abs().max()) == 0

