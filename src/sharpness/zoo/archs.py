"""Every architecture a card's ``arch`` may name: the plain-torch models and the adapters, and how to build one.

``arch`` is ``{"name": ..., "kwargs": {...}}``; :func:`build` rebuilds the network, :func:`complete_arch`
fills in what the data decides.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from sharpness.errors import SharpnessError
from sharpness.zoo import adapters
from sharpness.zoo.models import ARCHS, Normalize, Shape


def registry() -> dict[str, Callable[..., nn.Module]]:
    """Every architecture name :func:`build` knows: the plain-torch models and the adapters."""
    return {**ARCHS, **adapters.ADAPTERS}


def build(arch: dict[str, Any], *, pretrained: bool = True) -> nn.Module:
    """Rebuild the network a card's ``arch`` describes.

    ``mean`` and ``std`` in the kwargs prepend a :class:`Normalize` module (the result is
    ``Sequential(normalize=..., net=...)``). ``pretrained=False`` tells adapters to skip
    loading pretrained weights (a checkpoint's weights are loaded next anyway).
    """
    name, kwargs = _parse_arch(arch)
    table = registry()
    if name not in table:
        raise SharpnessError(f"unknown architecture {name!r}; known: {sorted(table)}")
    factory = table[name]
    mean, std = kwargs.pop("mean", None), kwargs.pop("std", None)
    if name not in ARCHS:
        kwargs["pretrained"] = pretrained
    check_kwargs(name, factory, kwargs)
    net = factory(**kwargs)
    if mean is None:
        return net
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))


def _parse_arch(arch: object) -> tuple[str, dict[str, Any]]:
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise SharpnessError(f"arch must be a dict {{'name': str, 'kwargs': dict}}, got {arch!r}")
    kwargs = arch.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise SharpnessError(f"arch {arch['name']!r}: kwargs must be a dict, got {kwargs!r}")
    return arch["name"], dict(kwargs)


def accepts(factory: Callable[..., Any], key: str) -> bool:
    """Whether ``factory`` takes the keyword ``key`` (or any keyword)."""
    params = inspect.signature(factory).parameters
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_kwargs(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Name the keyword arguments ``factory`` does not take, instead of a bare ``TypeError``."""
    bad = [k for k in kwargs if not accepts(factory, k)]
    if bad:
        known = [k for k in inspect.signature(factory).parameters if k != "self"]
        raise SharpnessError(f"architecture {name!r} takes no argument(s) {bad}; it takes {known}")


def complete_arch(arch: dict[str, Any], in_shape: Shape | None, n_classes: int,
                  mean: Sequence[float] | None, std: Sequence[float] | None) -> dict[str, Any]:
    """Fill in what the data decides (``in_shape``, ``n_classes``, ``mean``, ``std``) where the model takes it.

    Values already present in ``arch`` win.
    """
    name, kwargs = _parse_arch(arch)
    factory = registry().get(name)
    if factory is None:
        raise SharpnessError(f"unknown architecture {name!r}; known: {sorted(registry())}")
    found: dict[str, Any] = {"in_shape": list(in_shape) if in_shape is not None else None, "n_classes": n_classes}
    if name in ARCHS and mean is not None and std is not None:
        found.update(mean=list(mean), std=list(std))
    for key, value in found.items():
        if value is not None and key not in kwargs and (key in ("mean", "std") or accepts(factory, key)):
            kwargs[key] = value
    return {"name": name, "kwargs": kwargs}
