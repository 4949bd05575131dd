r"""Training: SGD or AdamW, learning-rate schedules, augmentation, label noise, SAM and ASAM.

One step at learning rate :math:`\eta_t = \eta \cdot f(t)`, where over ``T`` steps with
``W`` warm-up steps and :math:`s = (t - W) / (T - W)`:

* warm-up (``t < W``): :math:`f = (t + 1) / W`;
* ``constant``: :math:`f = 1`; ``step``: :math:`f = \gamma^{\#\{m \in \text{milestones}: s \ge m\}}`;
* ``cosine``: :math:`f = \tfrac12 (1 + \cos \pi s)`;
* ``onecycle``: linear rise over ``W`` steps (30% of ``T`` when no warm-up is set), then
  linear decay :math:`f = 1 - s` to 0.

SAM (Foret et al. 2021) takes the gradient at :math:`w + \epsilon`,
:math:`\epsilon = \rho\, T^2 g / \|T g\|_2`, with :math:`T = I` for SAM and
:math:`T = \mathrm{diag}(|w| + \eta)` for ASAM (Kwon et al. 2021), then updates ``w`` with it.
BatchNorm running statistics are not updated in the second pass.

>>> [round(lr_factor(t, 10, "cosine", warmup=0), 4) for t in (0, 5, 9)]
[1.0, 0.5, 0.0245]
>>> [lr_factor(t, 10, "step", warmup=2, milestones=(0.5,), gamma=0.1) for t in (0, 1, 2, 6)]
[0.5, 1.0, 1.0, 0.1]
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.objective import logits_of
from sharpness.scaling import scale_of
from sharpness.zoo.augment import augment, mixup, recipe
from sharpness.zoo.model_inputs import Inputs, inputs_on, noisy_labels

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["constant", "step", "cosine", "onecycle"]
Sam = Literal["none", "sam", "asam"]


@dataclass(frozen=True)
class TrainConfig:
    """Every training hyper-parameter (a card's ``hp`` holds them all).

    Attributes:
        optimizer: ``sgd`` (with ``momentum``) or ``adamw``.
        lr: peak learning rate. momentum: SGD momentum.
        weight_decay: decoupled for AdamW, L2 for SGD; applied to tensors with 2 or more
            dimensions only (not to biases or normalisation gains).
        batch_size, epochs: ``epochs`` is the maximum when ``target_train_loss`` is set.
        target_train_loss: stop after the first epoch whose mean training loss is at or below it.
        schedule, warmup_epochs, milestones, gamma: see the module docstring; ``milestones``
            are fractions of training.
        augment: ``none``/``light``/``medium``/``strong`` (:mod:`sharpness.zoo.augment`).
        mixup: Beta(alpha, alpha) mixup; ``None`` takes the augmentation level's default.
        label_smoothing, label_noise: ``label_noise`` is the fraction of training labels
            replaced, once and for a seed, by a different random class.
        sam, rho, asam_eta: sharpness-aware minimisation.
        grad_clip: clip the gradient's global L2 norm (``None``: off).
        amp: bf16 autocast on CUDA (ignored on the CPU).
    """

    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    target_train_loss: float | None = None
    schedule: Schedule = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    augment: str = "none"
    mixup: float | None = None
    label_smoothing: float = 0.0
    label_noise: float = 0.0
    sam: Sam = "none"
    rho: float = 0.05
    asam_eta: float = 0.01
    grad_clip: float | None = None
    amp: bool = False

    def __post_init__(self) -> None:
        for name, choices in (("optimizer", Optimizer), ("schedule", Schedule), ("sam", Sam)):
            if getattr(self, name) not in get_args(choices):
                raise SharpnessError(f"{name} must be one of {list(get_args(choices))}, got {getattr(self, name)!r}")
        recipe(self.augment)
        positive = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        for name, value in positive.items():
            if not value > 0:
                raise SharpnessError(f"{name} must be > 0, got {value!r}")
        for name in ("label_smoothing", "label_noise"):
            if not 0 <= getattr(self, name) < 1:
                raise SharpnessError(f"{name} must lie in [0, 1), got {getattr(self, name)!r}")
        if self.sam != "none" and not self.rho > 0:
            raise SharpnessError(f"rho must be > 0 for sam={self.sam!r}, got {self.rho!r}")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))

    @classmethod
    def from_dict(cls, hp: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(hp) - known)
        if unknown:
            raise SharpnessError(f"unknown training hyper-parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**hp)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    def non_default(self) -> dict[str, Any]:
        """The fields that differ from their defaults (what a model id hashes)."""
        default = TrainConfig().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != default[k]}

    @property
    def mixup_alpha(self) -> float:
        return recipe(self.augment).mixup if self.mixup is None else float(self.mixup)


def lr_factor(step: int, total: int, schedule: Schedule, warmup: int = 0,
              milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total`` (see the module docstring)."""
    if schedule == "onecycle" and warmup == 0:
        warmup = max(round(0.3 * total), 1)
    if step < warmup:
        return (step + 1) / warmup
    s = (step - warmup) / max(total - warmup, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(s >= m for m in milestones)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * s))
    if schedule == "onecycle":
        return 1.0 - s
    raise SharpnessError(f"unknown schedule {schedule!r}")


@dataclass
class TrainLog:
    """What a training run did: epochs and steps taken, the last epoch's mean loss, seconds.

    ``diverged``: the loss became non-finite and training stopped there.
    """

    epochs: int
    steps: int
    train_loss: float
    wall_time: float
    losses: list[float] = field(default_factory=list)
    diverged: bool = False


def _take(x: Inputs, idx: torch.Tensor) -> Inputs:
    return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]


def _forward(model: nn.Module, x: Inputs) -> torch.Tensor:
    return logits_of(model(**x) if isinstance(x, dict) else model(x))


def _optimizer(model: nn.Module, hp: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
    return torch.optim.AdamW(groups, lr=hp.lr)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with batch statistics but leave their running averages alone."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def sam_perturbation(params: Sequence[torch.Tensor], rho: float, adaptive: bool, eta: float) -> list[torch.Tensor]:
    r""":math:`\epsilon = \rho\, T^2 g / \|T g\|_2` from the ``.grad`` of ``params`` (:math:`T = |w| + \eta` for ASAM).

    For ASAM with ``eta = 0``, rescaling a weight by ``a`` rescales its :math:`\epsilon` by ``a``:
    the perturbed network of a rescaled network is the rescaled perturbed network.
    """
    with torch.no_grad():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        scales = [scale_of(p, "elementwise", eta, 0) if adaptive else torch.ones_like(p) for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t * g) for t, g in zip(scales, grads)]))
        factor = rho / norm.clamp_min(1e-12)
        return [t * t * g * factor for t, g in zip(scales, grads)]


def sam_gradient(model: nn.Module, loss_at: Callable[[], torch.Tensor], rho: float, adaptive: bool,
                 eta: float) -> torch.Tensor:
    r"""Leave in ``.grad`` the gradient at :math:`w + \epsilon` (SAM/ASAM) and return the loss at ``w``.

    ``loss_at()`` computes the mini-batch loss at the current weights. The weights are
    restored exactly (copied back, not subtracted).
    """
    loss = loss_at()
    loss.backward()
    params: list[torch.Tensor] = [p for p in model.parameters() if p.grad is not None]
    eps = sam_perturbation(params, rho, adaptive, eta)
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for p, e in zip(params, eps):
            p.add_(e)
    model.zero_grad(set_to_none=True)
    with frozen_batchnorm_stats(model):
        loss_at().backward()
    with torch.no_grad():
        torch._foreach_copy_(params, saved)
    return loss.detach()


def train(model: nn.Module, x: Inputs, y: torch.Tensor, hp: TrainConfig, n_classes: int, seed: int = 0,
          progress: bool = False) -> TrainLog:
    """Train ``model`` in place on ``(x, y)`` on the model's device.

    Args:
        model: any classifier; ``x`` is a tensor of images/signals or a dict of token tensors.
        y: integer labels (label noise is applied here, for ``seed``).
        hp: the hyper-parameters. n_classes: number of classes.
        seed: drives the data order, augmentation, mixup, label noise and dropout
            (the global torch RNG is re-seeded with it).
        progress: show a tqdm bar over epochs.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    aug_rng = torch.Generator(device=device).manual_seed(seed + 1)
    lam_rng = np.random.default_rng(seed)
    x, y = inputs_on(x, device), noisy_labels(y, hp.label_noise, n_classes, seed).to(device)
    n = y.shape[0]
    tensor_inputs = isinstance(x, torch.Tensor)
    if not tensor_inputs and (hp.augment != "none" or hp.mixup_alpha > 0):
        raise SharpnessError(f"augment={hp.augment!r} / mixup need image or signal tensors, not token inputs")
    per_epoch = max(n // hp.batch_size, 1)
    total, warmup = per_epoch * hp.epochs, round(hp.warmup_epochs * per_epoch)
    opt = _optimizer(model, hp)
    amp = hp.amp and device.type == "cuda"
    log = TrainLog(epochs=0, steps=0, train_loss=math.nan, wall_time=0.0)
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(hp.epochs), desc="train", leave=False, disable=not progress)
    for _ in bar:
        perm = torch.randperm(n, generator=order_rng)[: per_epoch * min(hp.batch_size, n)].to(device)
        epoch_loss = torch.zeros((), device=device)
        for idx in perm.view(per_epoch, -1):
            xb = _take(x, idx)
            target: torch.Tensor = F.one_hot(y[idx], n_classes).float()
            if isinstance(xb, torch.Tensor):
                xb = augment(xb, hp.augment, aug_rng)
                lam = float(lam_rng.beta(hp.mixup_alpha, hp.mixup_alpha)) if hp.mixup_alpha > 0 else 1.0
                xb, target = mixup(xb, target, hp.mixup_alpha, lam, aug_rng)

            def loss_at(xb: Inputs = xb, target: torch.Tensor = target) -> torch.Tensor:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = _forward(model, xb)
                return F.cross_entropy(logits.float(), target, label_smoothing=hp.label_smoothing)

            for group in opt.param_groups:
                group["lr"] = hp.lr * lr_factor(log.steps, total, hp.schedule, warmup, hp.milestones, hp.gamma)
            opt.zero_grad(set_to_none=True)
            if hp.sam == "none":
                loss = loss_at()
                loss.backward()
            else:
                loss = sam_gradient(model, loss_at, hp.rho, hp.sam == "asam", hp.asam_eta)
            if hp.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
            opt.step()
            epoch_loss += loss.detach()
            log.steps += 1
        log.epochs += 1
        log.train_loss = float(epoch_loss) / per_epoch
        log.losses.append(log.train_loss)
        bar.set_postfix(loss=f"{log.train_loss:.4f}")
        log.diverged = not math.isfinite(log.train_loss)
        if log.diverged or ( hp.target_train_loss is not None and log.train_loss <= hp.target_train_loss):
            break
    model.eval()
    log.wall_time = time.perf_counter() - start
    return log
