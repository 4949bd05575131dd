"""The user's model is restored bit for bit, whatever happens; bad input fails before any work."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sharpness import SharpnessError, Spec, measure
from testkit import SmallCNN, assert_restored, classification_data, mlp, snapshot


def prepared_model() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN()
    model.bn.running_mean.normal_()
    model.conv.weight.grad = torch.randn_like(model.conv.weight)
    model.head.bias.requires_grad_(False)
    model.train()
    model.drop.eval()  # a mixed mode must survive too
    return model


def cnn_data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


class Boom(Exception):
    pass


def failing_loss(after_calls: int, exc: BaseException):
    calls = {"n": 0}

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise exc
        return nn.functional.cross_entropy(out, target)

    return loss


SPECS = [
    Spec(case="worst", norm="linf", rho=0.1, n_iters=6),
    Spec(case="worst", norm="l2", rho=0.1, n_iters=6, init="random", scaling="filterwise"),
    Spec(case="average", norm="l2", rho=0.1, n_iters=6),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("exc", [Boom("from loss"), KeyboardInterrupt()], ids=["exception", "interrupt"])
@pytest.mark.parametrize("after_calls", [0, 2])  # 2: mid-measurement in every mode (6 draws in chunks of 4: 3 calls)
def test_model_restored_when_loss_raises(spec: Spec, exc: BaseException, after_calls: int) -> None:
    model = prepared_model()
    before = snapshot(model)
    with pytest.raises(type(exc)) as info:
        measure(model, [cnn_data()], spec, loss_fn=failing_loss(after_calls, exc))
    assert info.value is exc  # the user's own exception, unchanged
    assert_restored(model, before)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_model_restored_after_success_and_hook_interrupt(spec: Spec) -> None:
    model = prepared_model()
    before = snapshot(model)
    measure(model, [cnn_data()], spec)
    assert_restored(model, before)

    calls = {"n": 0}

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # mid-measurement in every mode (as above)
            raise KeyboardInterrupt

    handle = model.head.register_forward_hook(hook)
    with pytest.raises(KeyboardInterrupt):
        measure(model, [cnn_data()], spec)
    handle.remove()
    assert_restored(model, before)


def bad_inputs() -> list[tuple[str, object, object, Spec, str]]:
    """(name, model, data, spec, text the message must contain)."""
    x, y = classification_data(n=32)
    spec = Spec(case="worst", norm="l2", rho=0.1, n_iters=2)
    nan_model = mlp()
    with torch.no_grad():
        nan_model[0].weight[0, 0] = math.nan
    big = mlp()
    with torch.no_grad():
        big[2].bias.copy_(torch.tensor([1e308, -1e308, -1e308], dtype=torch.float64))
    return [
        ("empty data", mlp(), [], spec, "no batch"),
        ("m larger than data", mlp(), (x, y), spec.replace(m=64, n_examples=64), "m=64"),
        ("n_examples larger than data", mlp(), (x, y), spec.replace(m=16, n_examples=48), "n_examples=48"),
        ("params selects nothing", mlp(), [(x, y)], spec.replace(params="^nope"), "'^nope'"),
        ("non-finite weights", nan_model, [(x, y)], spec, "'0.weight'"),
        ("non-finite clean loss", big, [(x, y)], spec, "not finite"),
        ("targets out of range", mlp(), [(x, y + 5)], spec, "[0, 2]"),
        ("negative targets", mlp(), [(x, y - 3)], spec, "[0, 2]"),
        ("data on another device", mlp(), [(x.to("meta"), y)], spec, "meta"),
        ("unsupported batch", mlp(), [(x, y, y)], spec, "unsupported"),
        ("bare tensor batch", mlp(), [x], spec, "unsupported"),
        ("mapping without labels", mlp(), [{"input": x}], spec, "labels"),
        ("logit_norm with one logit", mlp(k=1), [(x, y.double()[:, None])], spec.replace(logit_norm=True), "K >= 2"),
        ("X and Y lengths differ", mlp(), (x, y[:10]), spec.replace(m=8, n_examples=8), "same number"),
        ("data is not iterable", mlp(), 3, spec, "int"),
        ("targets of the wrong shape", mlp(), [(x, y[:, None])], spec, "shape"),
        ("float class targets", mlp(), [(x, y.double())], spec, "integer class targets of shape (32,)"),
        ("every target ignored", mlp(), [(x, torch.full_like(y, -100))], spec, "every target is -100"),
        ("NaN in the inputs", mlp(), [(torch.where(x > 2, math.nan, x), y)], spec, "non-finite values"),
    ]


@pytest.mark.parametrize(("name", "model", "data", "spec", "needle"), bad_inputs(), ids=[c[0] for c in bad_inputs()])
def test_bad_input_fails_clearly_before_any_search(name: str, model: nn.Module, data: object, spec: Spec,
                                                    needle: str) -> None:
    before = snapshot(model)
    with pytest.raises(SharpnessError) as info:
        measure(model, data, spec)
    assert needle in str(info.value), str(info.value)
    for k, v in before["state"].items():
        assert torch.equal(model.state_dict()[k], v, ) or torch.isnan(v).any(), k


def test_malformed_later_batch_fails_before_the_first_search() -> None:
    x, y = classification_data(n=32)
    model = mlp()
    calls = {"n": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    with pytest.raises(SharpnessError, match="batch 1"):
        measure(model, [(x, y), (x, y + 7)], Spec(case="worst", norm="l2", rho=0.1))
    assert calls["n"] == 2  # the two clean passes that validate; no search pass
