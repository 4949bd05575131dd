r"""Fold BatchNorm running statistics into the preceding Conv or Linear layer.

In eval mode a BatchNorm layer is the affine map :math:`y = \gamma (x - \mu) / \sqrt{v + \epsilon} + \beta`
per channel. When :math:`x = W a + b` is the output of a convolution or linear layer, the pair is one layer
with

.. math:: W' = s \odot W, \quad b' = s (b - \mu) + \beta, \quad s = \gamma / \sqrt{v + \epsilon}

(scaled along the output channels). Measuring the folded network makes every sharpness definition
invariant to the reparametrisations that leave :math:`(W', b')` unchanged, e.g. rescaling a channel of
:math:`W, b` together with :math:`\mu, \sqrt{v + \epsilon}`, or shifting :math:`b` and :math:`\mu` together,
which the running statistics (buffers, never perturbed) otherwise absorb.

:func:`fold_batchnorm` works on a deep copy, so the caller's model is never touched. Which layer feeds
which BatchNorm is read from one traced forward pass: a BatchNorm is folded when its input is the very
tensor a Conv/Linear module returned, and no other module consumed it. The folded copy must reproduce the
original output on that batch, or a :class:`SharpnessError` says why not.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double().eval()
>>> net[1].running_mean.uniform_(-1, 1); net[1].running_var.uniform_(0.5, 2)  # doctest: +ELLIPSIS
tensor(...)
>>> x = torch.randn(5, 3, dtype=torch.float64)
>>> folded = fold_batchnorm(net, Batch((x,), {}, torch.zeros(5)))
>>> type(folded[1]).__name__, torch.allclose(folded(x), net(x), atol=1e-12)
('Identity', True)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from sharpness.errors import SharpnessError
from sharpness.objective import Batch, logits_of

_FOLDABLE = (nn.Linear, _ConvNd)


def fold_batchnorm(model: nn.Module, batch: Batch) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded, traced and checked on ``batch``."""
    folded = copy.deepcopy(model).eval()
    with torch.random.fork_rng(devices=_cuda_devices(folded)), torch.no_grad():
        pairs, reference = _trace(folded, batch)
        for layer_name, bn_name in pairs:
            _fold(folded.get_submodule(layer_name), folded.get_submodule(bn_name), layer_name, bn_name)
            parent, _, child = bn_name.rpartition(".")
            setattr(folded.get_submodule(parent), child, nn.Identity())
        output = logits_of(folded(*batch.args, **batch.kwargs))
    gap = float((output - reference).abs().max()) if output.shape == reference.shape else float("inf")
    tol = torch.finfo(reference.dtype).eps ** 0.5 * (1 + float(reference.abs().max()))
    if not gap <= tol:
        raise SharpnessError(
            f"fold_bn changed the model's output by {gap:.3g} (tolerance {tol:.3g}): a folded layer's output "
            "is used elsewhere too; measure without fold_bn"
        )
    return folded


def _cuda_devices(model: nn.Module) -> list[torch.device]:
    return sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)


def _trace(model: nn.Module, batch: Batch) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """(layer, BatchNorm) name pairs found in one forward pass, and that pass's output."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    consumers: dict[int, list[str]] = {}
    seen: list[torch.Tensor] = []  # holding every input keeps the ids above unique during the pass
    calls: dict[str, int] = {}

    def before(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            calls[name] = calls.get(name, 0) + 1
            for a in args:
                if isinstance(a, torch.Tensor):
                    consumers.setdefault(id(a), []).append(name)
                    seen.append(a)
        return hook

    def after(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor):
                produced[id(out)] = (name, out)
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_pre_hook(before(n)) for n, m in leaves]
    handles += [m.register_forward_hook(after(n)) for n, m in leaves if isinstance(m, _FOLDABLE)]
    try:
        reference = logits_of(model(*batch.args, **batch.kwargs))
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for bn_name, bn in leaves:
        if not isinstance(bn, _BatchNorm) or bn_name not in calls:
            continue
        inputs = [i for i, names in consumers.items() if bn_name in names]
        source = produced.get(inputs[0]) if len(inputs) == 1 and calls[bn_name] == 1 else None
        if source is None:
            raise SharpnessError(
                f"fold_bn: BatchNorm {bn_name!r} does not directly follow a Conv/Linear layer called once; "
                "measure without fold_bn"
            )
        layer_name, out = source
        if consumers[inputs[0]] != [bn_name] or calls[layer_name] != 1:
            raise SharpnessError(f"fold_bn: the output of {layer_name!r} feeds more than BatchNorm {bn_name!r}")
        if isinstance(model.get_submodule(layer_name), nn.Linear) and out.dim() != 2:
            raise SharpnessError(f"fold_bn: BatchNorm {bn_name!r} normalises dim 1 of a {out.dim()}-d Linear output")
        pairs.append((layer_name, bn_name))
    return pairs, reference


def _fold(layer: nn.Module, bn: nn.Module, layer_name: str, bn_name: str) -> None:
    assert isinstance(layer, _FOLDABLE) and isinstance(bn, _BatchNorm)
    if bn.running_mean is None or bn.running_var is None:
        raise SharpnessError(f"fold_bn: BatchNorm {bn_name!r} keeps no running statistics")
    transposed = isinstance(layer, _ConvNd) and layer.transposed
    if transposed and layer.groups != 1:
        raise SharpnessError(f"fold_bn: cannot fold into the grouped transposed convolution {layer_name!r}")
    weight = layer.weight
    dim = 1 if transposed else 0
    if weight.shape[dim] != bn.num_features:
        raise SharpnessError(f"fold_bn: {layer_name!r} has {weight.shape[dim]} outputs, {bn_name!r} normalises "
                             f"{bn.num_features}")
    stats = torch.float64
    scale = (bn.running_var.to(stats) + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.to(stats)
    shift = -bn.running_mean.to(stats) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(stats)
    shape = [-1 if d == dim else 1 for d in range(weight.dim())]
    weight.copy_((weight.to(stats) * scale.view(shape)).to(weight.dtype))
    bias = shift if layer.bias is None else layer.bias.to(stats) * scale + shift
    layer.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=weight.requires_grad)
