"""The fast mode measures what the exact mode measures, with the same guarantees.

Models are trained for a few epochs on scikit-learn's digits. The GPU-side paths (reduced
precision, stacked m-batches, chunked draws, captured passes) are forced on the CPU through
``fast.options``; on a machine with CUDA the agreement tests also run there.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from digits_models import mbatches, trained
from torch import nn

from sharpness import SharpnessError, Spec, fast, measure
from testkit import assert_restored, snapshot

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# The GPU-side configuration, run on the CPU: TF32 products (emulated off CUDA), two m-batches per pass, draws in
# chunks of four (n_iters=6 makes a short last chunk).
GPU_SIDE = {"precision": "tf32", "stack": 2, "draws": 4}

AGREEMENT = [
    ("cnn", Spec(case="worst", norm="linf", rho=0.002, n_iters=20)),
    ("cnn", Spec(case="worst", norm="l2", rho=0.1, n_iters=20)),
    ("cnn", Spec(case="average", norm="l2", rho=0.1, n_iters=6)),
    ("vit", Spec(case="worst", norm="linf", rho=0.002, n_iters=10)),
    ("vit", Spec(case="average", norm="l2", rho=0.1, n_iters=6, antithetic=True)),
    ("mlp", Spec(case="worst", norm="l2", rho=0.1, n_iters=20)),
    ("mlp", Spec(case="worst", norm="linf", rho=0.001, n_iters=20, init="random", n_restarts=2)),
]


def on(device: str, name: str) -> tuple[nn.Module, list]:
    """A private copy of a trained model (tests may change it) and two m-batches of 64, on ``device``."""
    model = copy.deepcopy(trained(name)).to(device)
    return model, [(x.to(device), y.to(device)) for x, y in mbatches()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "spec"), AGREEMENT, ids=[f"{n}-{s}" for n, s in AGREEMENT])
def test_fast_values_agree_with_exact(device: str, name: str, spec: Spec) -> None:
    model, batches = on(device, name)
    exact = measure(model, batches, spec)
    with fast.options(**GPU_SIDE, compile="off"):
        quick = measure(model, batches, spec, mode="fast")
    assert quick.value > 0
    # A search in TF32 takes another trajectory; 0.6% short is the largest gap seen (CNN, L2, AMD EPYC).
    assert abs(quick.value - exact.value) <= 0.01 * abs(exact.value)
    if spec.case == "average":  # the same draws, evaluated in float32: equal up to rounding
        assert quick.value == pytest.approx(exact.value, rel=1e-5)
        assert quick.stderr == pytest.approx(exact.stderr, rel=1e-4)
    else:
        assert quick.radius <= spec.rho
    assert quick.mode == "fast" and exact.mode == "exact"
    assert quick.details["fast"]["fallbacks"] == []


@pytest.mark.parametrize("spec", [Spec(case="worst", norm="linf", rho=0.002, n_iters=8),
                                  Spec(case="worst", norm="l2", rho=0.1, n_iters=8, init="random"),
                                  Spec(case="average", norm="l2", rho=0.1, n_iters=6)], ids=str)
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_fast_mode_restores_the_model_and_stays_feasible(spec: Spec, precision: str) -> None:
    model, batches = on("cpu", "cnn")
    model.train()
    model.features[0].weight.grad = torch.ones_like(model.features[0].weight)
    model.head[0].bias.requires_grad_(False)
    before = snapshot(model)
    with fast.options(precision=precision, stack=2, draws=4):
        res = measure(model, batches, spec, mode="fast")
    assert_restored(model, before)
    assert res.radius is None or res.radius <= spec.rho
    assert math.isfinite(res.value) and res.value >= 0
    json.dumps(res.to_dict())


class Boom(Exception):
    pass


def test_model_errors_propagate_unchanged_after_restoring() -> None:
    model, batches = on("cpu", "mlp")
    before = snapshot(model)
    calls = {"n": 0}

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 4:
            raise Boom("from the loss")
        return nn.functional.cross_entropy(out, target)

    with fast.options(**GPU_SIDE), pytest.raises(Boom, match="from the loss"):
        measure(model, batches, Spec(case="worst", norm="linf", rho=0.01, n_iters=5), loss, mode="fast")
    assert_restored(model, before)


class ItemNet(nn.Module):
    """A forward with a host sync (``.item()``), which ``vmap`` and ``torch.func.grad`` refuse."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if out.sum().item() < math.inf else out * 0


def test_a_model_vmap_refuses_falls_back_to_the_module_path() -> None:
    model, batches = on("cpu", "mlp")
    wrapped = ItemNet(model)
    spec = Spec(case="worst", norm="l2", rho=0.1, n_iters=6)
    exact = measure(wrapped, batches, spec)
    with fast.options(precision="fp32", stack=2):
        quick = measure(wrapped, batches, spec, mode="fast")
    details = quick.details["fast"]
    assert "module" in details["path"] and details["fallbacks"]
    assert quick.value == exact.value  # the module path in the model's dtype is the exact computation


def test_captured_passes_match_eager_ones() -> None:
    """``compile="trace"`` captures the pass with TorchDynamo (no code generation): the GPU's compile path."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model, batches = on("cpu", "mlp")
    spec = Spec(case="worst", norm="linf", rho=0.002, n_iters=6)
    results = {}
    for mode in ("off", "trace"):
        with fast.options(**GPU_SIDE, compile=mode):
            results[mode] = measure(model, batches, spec, mode="fast")
    assert results["trace"].details["fast"]["fallbacks"] == []
    assert "captured" in results["trace"].details["fast"]["path"]
    assert not torch._dynamo.utils.counters["graph_break"]  # one graph per kind of pass
    # The TF32 rounding set around the call is captured too: the same numbers as eager.
    assert results["trace"].per_batch == results["off"].per_batch


def test_counts_and_records() -> None:
    model, batches = on("cpu", "mlp")
    spec = Spec(case="worst", norm="linf", rho=0.002, n_iters=6)
    exact = measure(model, batches, spec)
    with fast.options(**GPU_SIDE):
        quick = measure(model, batches, spec, mode="fast")
    # One more forward per m-batch: the best point re-evaluated in the model's dtype.
    assert (quick.n_forward, quick.n_backward) == (exact.n_forward + len(batches), exact.n_backward)
    record = quick.to_dict()
    assert record["mode"] == "fast" and "2 m-batches per pass" in record["details"]["fast"]["path"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "quick"}, "mode must be one of"),
])
def test_bad_mode(kwargs: dict, match: str) -> None:
    model, batches = on("cpu", "mlp")
    with pytest.raises(SharpnessError, match=match):
        measure(model, batches, Spec(case="worst", norm="l2", rho=0.1), **kwargs)


@pytest.mark.parametrize(("field", "value"), [("stack", -1), ("draws", 1.5), ("precision", "fp16"),
                                              ("compile", "max"), ("memory_fraction", 0.0)])
def test_bad_options(field: str, value: object) -> None:
    with pytest.raises(SharpnessError, match=field), fast.options(**{field: value}):
        pass


def test_row_memory_estimate_is_linear_in_the_batch() -> None:
    """Saved activations of m examples = m times one example's, plus the per-row constant the estimate assumes."""
    model, batches = on("cpu", "cnn")
    x, y = batches[0]
    one, two, full = (fast.saved_bytes_of(model, x[:n], y[:n], "bf16") for n in (1, 2, len(y)))
    assert full == (two - one) * len(y) + (2 * one - two)
