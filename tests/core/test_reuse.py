"""Reusing dead flat vectors (the CPU's answer to page faults) changes no value and never hands out a live one."""

from __future__ import annotations

import pytest
import torch

from sharpness import Spec, measure
from sharpness import space as space_module
from sharpness.average_case import draws
from sharpness.space import FlatBall, Pool
from testkit import classification_data, mlp

SEARCHES = [
    Spec(case="worst", norm="linf", rho=0.05, m=32, n_examples=64, n_iters=12),
    Spec(case="worst", norm="l2", rho=0.5, m=32, n_examples=64, n_iters=12),
    Spec(case="worst", norm="linf", rho=0.05, m=64, n_examples=64, n_iters=9, init="random", n_restarts=3),
    Spec(case="worst", norm="l2", rho=0.2, m=64, n_examples=64, n_iters=9, init="random", n_restarts=2,
         scaling="standard"),
    Spec(case="average", norm="l2", rho=0.1, m=32, n_examples=64, n_iters=6),
    Spec(case="average", norm="linf", rho=0.1, m=64, n_examples=64, n_iters=6, antithetic=True),
]


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("spec", SEARCHES, ids=str)
def test_reuse_changes_no_value_bit_for_bit(spec: Spec, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = mlp(), classification_data()
    reused = measure(model, data, spec, mode=mode)
    monkeypatch.setattr(space_module.Pool, "give", lambda self, *dead: None)  # every vector new
    fresh = measure(model, data, spec, mode=mode)
    assert (reused.value, reused.radius, reused.stderr) == (fresh.value, fresh.radius, fresh.stderr)


def test_draws_into_reused_buffers_are_the_same_numbers() -> None:
    like = torch.zeros(1000)
    for spec in (Spec(case="average", norm="l2", rho=0.3, n_iters=5),
                 Spec(case="average", norm="linf", rho=0.3, n_iters=6, antithetic=True)):
        pooled = [u.clone() for u in draws(spec, like, torch.Generator().manual_seed(3), Pool())]
        fresh = list(draws(spec, like, torch.Generator().manual_seed(3)))
        assert all(torch.equal(a, b) for a, b in zip(pooled, fresh, strict=True))
        if spec.antithetic:
            assert torch.equal(pooled[1], -pooled[0])


def test_a_pool_hands_out_only_what_was_given_and_keeps_a_bounded_number() -> None:
    pool, like = Pool(size=2), torch.zeros(5)
    a, b, c = torch.ones(5), torch.ones(5), torch.ones(5)
    pool.give(a, b, c, a)
    taken = [pool.take(like), pool.take(like), pool.take(like)]
    assert taken[0] is a and taken[1] is b and taken[2] is not c and taken[2].shape == like.shape
    pool.give(torch.ones(3))
    assert pool.take(like).shape == (5,)  # a vector of another shape is never handed out for this one


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_step_writes_neither_the_point_nor_the_gradient(norm: str) -> None:
    g0 = torch.Generator().manual_seed(0)
    u, g = torch.rand(50, generator=g0) * 0.01, torch.randn(50, generator=g0)
    u0, gc = u.clone(), g.clone()
    pool = Pool()
    pool.give(torch.full((50,), float("nan")))  # a reused vector's old contents must not leak into the step
    ball = FlatBall(norm, 0.1, torch.float32, pool)  # type: ignore[arg-type]
    z = ball.advance(u, g, torch.tensor(0.2))
    assert torch.equal(u, u0) and torch.equal(g, gc) and torch.isfinite(z).all()
    assert float(ball.norm(z)) <= 0.1
    new = ball.combine(u, z, 0.75)
    assert new is z and torch.equal(u, u0) and float(ball.norm(new)) <= 0.1
