"""Every case runs in every mode, or says that it runs exactly: ``Result.mode`` is what ran.

A case reaches the fast mode by asking its executor for its searches and draws; one that ran its own
passes would come back ``mode="exact"`` here, whatever it was asked.
"""

from __future__ import annotations

import pytest
import torch

from sharpness import Spec, fast, measure
from sharpness.cases import CASES, Case, Context, Summary
from sharpness.cases.worst import summary
from sharpness.worst_case import worst_case
from testkit import classification_data, mlp

# One spec per case, small enough to run in a second.
SPECS = {
    "worst": "worst-linf-elementwise:rho=0.01,m=16,n_examples=32,n_iters=6",
    "average": "average-l2-elementwise:rho=0.05,m=16,n_examples=32,n_iters=8",
    "keskar": "keskar-linf-elementwise:rho=0.001,eta=1.0,m=16,n_examples=32,n_iters=6",
    "pacbayes": "pacbayes-linf-elementwise:rho=0.1,eta=0.001,m=16,n_examples=32,n_iters=4,target=loss",
    "trace": "trace-l2-elementwise:rho=1,m=16,n_examples=32,n_iters=8",
    "eigen": "eigen-l2-standard:rho=1,m=16,n_examples=32,n_iters=8",
}
# What the fast mode does on a GPU, forced on the CPU: TF32 search, 2 m-batches per pass, 4 draws per pass.
GPU_SIDE = {"precision": "tf32", "stack": 2, "draws": 4, "compile": "off"}


def test_every_case_has_a_spec_here() -> None:
    assert set(SPECS) == set(CASES)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_the_fast_mode_reaches_every_case_or_the_case_says_it_runs_exactly(case: Case) -> None:
    model, data = mlp(), classification_data()
    with fast.options(**GPU_SIDE):
        res = measure(model, data, Spec.parse(SPECS[case.name]), mode="fast")
    path = res.details["fast"]["path"]
    if case.runs_exactly is None:
        assert res.mode == "fast" and not path.startswith("exact"), path
        assert "per pass" in path
    else:
        assert res.mode == "exact" and path == f"exact: {case.runs_exactly}"


def test_a_case_that_runs_its_own_passes_is_reported_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``Result.mode`` says is what ran, not what was asked."""

    def own_passes(ctx: Context) -> Summary:
        found = [worst_case(ctx.probe, b, ctx.spec, ctx.generator, e) for b, e in zip(ctx.batches, ctx.with_error)]
        return summary(found, ctx.clean, ctx.probe.space.ball(ctx.spec).norm)

    monkeypatch.setitem(CASES, "worst", Case("worst", own_passes))
    with fast.options(**GPU_SIDE):
        res = measure(mlp(), classification_data(), Spec.parse(SPECS["worst"]), mode="fast")
    assert res.mode == "exact" and "fast" not in res.details


@pytest.mark.parametrize("text", [
    SPECS["keskar"],
    "keskar-linf-elementwise:rho=0.01,eta=1.0,m=16,n_examples=32,n_iters=6,subspace=10",
    "keskar-l2-standard:rho=0.05,m=16,n_examples=32,n_iters=6",
    SPECS["pacbayes"],
    "pacbayes-l2-elementwise:rho=0.1,eta=0.001,m=16,n_examples=32,n_iters=4",
])
def test_keskar_and_pacbayes_in_the_fast_mode(text: str) -> None:
    """TF32 searches re-evaluated in the model's dtype stay within 1% of the exact values; on this
    device's defaults (the model's arithmetic, one m-batch per pass) the values are the exact ones."""
    model, data = mlp(d_in=6, seed=1, dtype=torch.float32), classification_data(d_in=6, seed=2, dtype=torch.float32)
    spec = Spec.parse(text)
    exact = measure(model, data, spec)
    default = measure(model, data, spec, mode="fast")
    with fast.options(**GPU_SIDE):
        quick = measure(model, data, spec, mode="fast")
    assert quick.mode == default.mode == "fast" and exact.mode == "exact"
    # The CPU's defaults: the exact computation, counted the same (no re-evaluation is needed).
    assert default.value == exact.value and default.n_forward == exact.n_forward
    assert quick.value == pytest.approx(exact.value, rel=1e-2, abs=1e-6)
    kind = "search" if spec.case == "keskar" or spec.norm == "linf" else "draws"
    assert quick.details["fast"]["path"].startswith(f"{kind} ")
    if kind == "search":
        # keskar searches every m-batch at once, pacbayes one m-batch per trial scale
        rows = "2 m-batches" if spec.case == "keskar" else "1 m-batch"
        assert "TF32" in quick.details["fast"]["path"] and f"{rows} per pass" in quick.details["fast"]["path"]
    else:  # draws are evaluated in the model's dtype, 4 per pass
        assert "4 draws per pass" in quick.details["fast"]["path"]
