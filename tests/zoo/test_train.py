"""Training: schedules' closed forms, SAM/ASAM, augmentation, label noise, and learning on real data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpness import SharpnessError
from sharpness.zoo import augment as aug
from sharpness.zoo import build, datasets
from sharpness.zoo.archs import complete_arch
from sharpness.zoo.model_inputs import noisy_labels, row_major
from sharpness.zoo.train import (
    TrainConfig,
    frozen_batchnorm_stats,
    lr_factor,
    sam_gradient,
    sam_perturbation,
    train,
)

T = 100
SCHEDULES = [
    # schedule, warmup, step, expected factor
    ("constant", 0, 0, 1.0), ("constant", 0, 99, 1.0),
    ("constant", 10, 0, 0.1), ("constant", 10, 4, 0.5), ("constant", 10, 9, 1.0), ("constant", 10, 50, 1.0),
    ("cosine", 0, 0, 1.0), ("cosine", 0, 50, 0.5), ("cosine", 0, 25, 0.5 * (1 + math.cos(math.pi / 4))),
    ("cosine", 20, 20, 1.0), ("cosine", 20, 60, 0.5), ("cosine", 20, 9, 0.5),
    ("step", 0, 49, 1.0), ("step", 0, 50, 0.1), ("step", 0, 74, 0.1), ("step", 0, 75, 0.1**2),
    ("onecycle", 0, 0, 1 / 30), ("onecycle", 0, 29, 1.0), ("onecycle", 0, 30, 1.0), ("onecycle", 0, 65, 0.5),
    ("onecycle", 10, 9, 1.0), ("onecycle", 10, 55, 0.5),
]


@pytest.mark.parametrize(("schedule", "warmup", "step", "expected"), SCHEDULES)
def test_schedule_closed_forms(schedule: str, warmup: int, step: int, expected: float) -> None:
    assert lr_factor(step, T, schedule, warmup) == pytest.approx(expected, rel=1e-12)  # type: ignore[arg-type]


@pytest.mark.parametrize(("hp", "needle"), [
    ({"optimizer": "lbfgs"}, "optimizer"), ({"schedule": "linear"}, "schedule"), ({"augment": "extreme"}, "augment"),
    ({"lr": 0.0}, "lr"), ({"label_noise": 1.0}, "label_noise"), ({"sam": "sam", "rho": 0.0}, "rho"),
    ({"learning_rate": 0.1}, "learning_rate"),
])
def test_bad_hyper_parameters_are_named(hp: dict, needle: str) -> None:
    with pytest.raises(SharpnessError, match=needle):
        TrainConfig.from_dict(hp)


def test_non_default_lists_only_changes() -> None:
    assert TrainConfig(lr=0.05, augment="light").non_default() == {"lr": 0.05, "augment": "light"}
    assert TrainConfig(augment="strong").mixup_alpha == 0.5 and TrainConfig(augment="strong", mixup=0).mixup_alpha == 0


def test_noisy_labels_exact_fraction_and_deterministic() -> None:
    y = torch.arange(200) % 7
    noisy = noisy_labels(y, 0.25, 7, seed=3)
    changed = noisy != y
    assert int(changed.sum()) == 50
    assert torch.equal(noisy, noisy_labels(y, 0.25, 7, seed=3))
    assert not torch.equal(noisy, noisy_labels(y, 0.25, 7, seed=4))
    assert int(noisy.min()) >= 0 and int(noisy.max()) < 7


# ------------------------------------------------------------------------------------------------ SAM


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_gradient_is_the_gradient_at_the_ascent_point(adaptive: bool) -> None:
    net, (x, y) = _net(), _batch()
    rho, eta = 0.3, 0.01
    before = [p.detach().clone() for p in net.parameters()]

    def loss_at() -> torch.Tensor:
        return F.cross_entropy(net(x), y)

    clean = sam_gradient(net, loss_at, rho, adaptive, eta)
    got = [p.grad.clone() for p in net.parameters()]
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))  # weights restored bit for bit
    # by hand: g at w, eps = rho T^2 g / ||T g||, gradient at w + eps
    ref = _net()
    g = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
    t = [p.detach().abs() + eta if adaptive else torch.ones_like(p) for p in ref.parameters()]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
    with torch.no_grad():
        for p, ti, gi in zip(ref.parameters(), t, g):
            p.add_(rho * ti * ti * gi / norm)
    expected = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
    fresh = _net()
    assert float(clean) == pytest.approx(float(F.cross_entropy(fresh(x), y).detach()))
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-6)
    plain = torch.autograd.grad(F.cross_entropy(fresh(x), y), list(fresh.parameters()))
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(got, plain))  # SAM differs from SGD


def _rescaled(net: nn.Module, a: float) -> nn.Module:
    """Function-preserving ReLU rescaling: layer 1 (weight and bias) times a, layer 2 weight over a."""
    other = _net()
    with torch.no_grad():
        other[0].weight.mul_(a)
        other[0].bias.mul_(a)
        other[2].weight.div_(a)
    return other


@pytest.mark.parametrize(("adaptive", "invariant"), [(True, True), (False, False)])
def test_asam_is_scale_aware_and_sam_is_not(adaptive: bool, invariant: bool) -> None:
    x, y = _batch()
    a, rho = 4.0, 0.5

    def perturbed_loss(net: nn.Module) -> float:
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        params = list(net.parameters())
        eps = sam_perturbation(params, rho, adaptive, eta=0.0)
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.add_(e)
            return float(F.cross_entropy(net(x), y))

    net, scaled = _net(), _rescaled(_net(), a)
    assert torch.allclose(net(x), scaled(x), atol=1e-5)
    same = perturbed_loss(net) == pytest.approx(perturbed_loss(scaled), rel=1e-4)
    assert same is invariant


def test_second_sam_pass_leaves_batchnorm_statistics_alone() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).train()
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    ref = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).train()
    ref.load_state_dict(net.state_dict())
    ref(x)  # one ordinary training forward
    sam_gradient(net, lambda: F.cross_entropy(net(x), y), 0.1, False, 0.0)
    assert torch.equal(net[1].running_mean, ref[1].running_mean)
    assert torch.equal(net[1].running_var, ref[1].running_var)
    with frozen_batchnorm_stats(net):
        assert net[1].momentum == 0.0
    assert net[1].momentum == 0.1


# ------------------------------------------------------------------------------------------- augmentation


def test_light_augmentation_is_a_translation_or_flip() -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = aug.augment(x, "light", torch.Generator().manual_seed(5))
    pad = 1
    padded = F.pad(x, [pad] * 4)
    for i in range(6):
        candidates = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


@pytest.mark.parametrize("level", ["none", "light", "medium", "strong"])
@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (8, 1, 40)])
def test_augmentation_keeps_shape_range_and_is_seeded(level: str, shape: tuple) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    a = aug.augment(x, level, torch.Generator().manual_seed(1))
    b = aug.augment(x, level, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    if len(shape) == 4:
        assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, x) is (level == "none")


def test_mixup_is_a_convex_combination() -> None:
    x, y = torch.rand(10, 3), F.one_hot(torch.arange(10) % 4, 4).float()
    xm, ym = aug.mixup(x, y, 0.2, 0.7, torch.Generator().manual_seed(0))
    assert torch.allclose(ym.sum(dim=1), torch.ones(10))
    perm = ((xm - 0.7 * x) / 0.3)
    assert all(any(torch.allclose(perm[i], x[j], atol=1e-5) for j in range(10)) for i in range(10))


# ------------------------------------------------------------------------------------- real data, tiny


@pytest.fixture(scope="module")
def digits() -> datasets.DataBundle:
    return datasets.load("digits", n_train=256, n_test=128)


def _model(bundle: datasets.DataBundle, name: str = "mlp", **kwargs: object) -> nn.Module:
    arch = complete_arch({"name": name, "kwargs": kwargs}, bundle.train.x.shape[1:], bundle.n_classes,
                         bundle.mean, bundle.std)
    torch.manual_seed(0)
    return build(arch)


@pytest.mark.parametrize("hp", [
    {"lr": 0.05, "epochs": 6, "batch_size": 32},
    {"optimizer": "adamw", "lr": 3e-3, "epochs": 6, "batch_size": 32, "weight_decay": 0.05, "schedule": "onecycle"},
    {"lr": 0.05, "epochs": 6, "batch_size": 32, "sam": "asam", "rho": 0.5, "label_smoothing": 0.1},
    {"lr": 0.05, "epochs": 6, "batch_size": 32, "sam": "sam", "rho": 0.1, "mixup": 0.2},
], ids=["sgd", "adamw-onecycle", "asam-smoothing", "sam-mixup"])
def test_training_reduces_loss_on_digits(digits: datasets.DataBundle, hp: dict) -> None:
    model = _model(digits, hidden=[32])
    log = train(model, digits.train.x, digits.train.y, TrainConfig.from_dict(hp), digits.n_classes, seed=0)
    assert log.epochs == 6 and log.steps == 6 * 8 and not log.diverged
    assert log.losses[-1] < 0.6 * log.losses[0]
    with torch.no_grad():
        err = float((model(digits.test.x).argmax(1) != digits.test.y).float().mean())
    assert err < 0.35
    assert not model.training


def test_training_is_deterministic_and_stops_at_target(digits: datasets.DataBundle) -> None:
    hp = TrainConfig(lr=0.05, epochs=2, batch_size=64, augment="light", label_noise=0.1)
    a, b = _model(digits, "cnn", width=2, hidden=8), _model(digits, "cnn", width=2, hidden=8)
    train(a, digits.train.x, digits.train.y, hp, 10, seed=1)
    train(b, digits.train.x, digits.train.y, hp, 10, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    log = train(_model(digits), digits.train.x, digits.train.y, TrainConfig(epochs=5, target_train_loss=10.0), 10)
    assert log.epochs == 1


def test_inputs_with_odd_strides_are_trained_in_row_major_layout() -> None:
    """numpy's ``a[:, None]`` gives size-1 channels odd strides; conv backward crashed on them (torch 2.13 CPU)."""
    x = torch.from_numpy(np.random.default_rng(0).random((64, 12, 12), dtype=np.float32)[:, None])
    assert x.stride() != (144, 144, 12, 1)
    assert row_major(x).stride() == (144, 144, 12, 1) and torch.equal(row_major(x), x)
    torch.manual_seed(0)
    model = build({"name": "preact_resnet18", "kwargs": {"in_shape": [1, 12, 12], "n_classes": 3, "width": 2}})
    log = train(model, x, torch.arange(64) % 3, TrainConfig(epochs=2, batch_size=16), 3)
    assert log.steps == 8 and not log.diverged
