"""In-distribution and out-of-distribution errors of a model, and the data a card was trained on.

:func:`evaluate` returns the flat metrics of a card: ``train_err``, ``train_loss``,
``test_err``, ``test_loss`` and, for every shift of :mod:`sharpness.zoo.shifts`
applied to the test split, ``ood.<shift>_err`` and ``ood.<shift>_loss``. Errors are
fractions in [0, 1], losses mean cross-entropies.

:func:`inputs` rebuilds a card's dataset (checking its fingerprint) and returns
``(X, Y)`` ready for :func:`sharpness.measure`: a tensor, or for text models the dict of
token tensors their ``forward`` takes. Training labels carry the card's label noise,
as in training.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.objective import logits_of
from sharpness.zoo.datasets import DataBundle
from sharpness.zoo.model_inputs import Inputs, inputs_on, noisy_labels, row_major
from sharpness.zoo.ood import OodSet
from sharpness.zoo.registry import load_data


def as_inputs(model: nn.Module, x: torch.Tensor | Sequence[str]) -> Inputs:
    """Model inputs for a split's ``x``: tensors as they are, texts through the model's ``encode``."""
    if isinstance(x, torch.Tensor):
        return x
    encode = getattr(model, "encode", None)
    if encode is None:
        raise SharpnessError(f"{type(model).__name__} has no encode(); text data needs a text model (e.g. 'minilm')")
    out: dict[str, torch.Tensor] = encode(list(x))
    return out


def merge_logits(logits: torch.Tensor, groups: Sequence[Sequence[int]] | None) -> torch.Tensor:
    """Per group, the log-sum-exp of its columns (``None``: unchanged).

    >>> merge_logits(torch.log(torch.tensor([[0.2, 0.3, 0.5]])), [[0], [1, 2]]).exp()
    tensor([[0.2000, 0.8000]])
    """
    if groups is None:
        return logits
    return torch.stack([logits[:, list(g)].logsumexp(dim=1) for g in groups], dim=1)


@torch.no_grad()
def loss_and_error(model: nn.Module, x: Inputs, y: torch.Tensor, batch_size: int = 512,
                   groups: Sequence[Sequence[int]] | None = None) -> tuple[float, float]:
    """Mean cross-entropy and 0-1 error of ``model`` (in eval mode, on its device) over ``(x, y)``.

    ``groups``: merge logit columns first (see :class:`OodSet`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, total_wrong = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    n = y.shape[0]
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            xb = inputs_on({k: v[sl] for k, v in x.items()} if isinstance(x, dict) else x[sl], device)
            logits = merge_logits(logits_of(model(**xb) if isinstance(xb, dict) else model(xb)).float(), groups)
            yb = y[sl].to(device)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").double().cpu()
            total_wrong += (logits.argmax(dim=1) != yb).sum().double().cpu()
    finally:
        model.train(was_training)
    return float(total_loss) / n, float(total_wrong) / n


def shifted_sets(bundle: DataBundle, shifts: Sequence[str] | None = None, severity: int = 5,
                 seed: int = 0) -> dict[str, OodSet]:
    """The test split under each shift (``None``: the modality's defaults), computed once for a whole zoo."""
    from sharpness.zoo import shifts as shift_module

    names = shift_module.shifts_for(bundle.modality) if shifts is None else list(shifts)
    return {name: OodSet(shift_module.apply(name, bundle.test.x, severity=severity, seed=seed), bundle.test.y)
            for name in names}


def evaluate(model: nn.Module, bundle: DataBundle, shifts: Sequence[str] | None = None, *, severity: int = 5,
             seed: int = 0, train_labels: torch.Tensor | None = None, ood: dict[str, OodSet] | None = None,
             batch_size: int = 512) -> dict[str, float]:
    """Flat metrics of ``model`` on ``bundle``: ID train/test error and loss, OOD error and loss per shift.

    Args:
        shifts: names from :data:`sharpness.zoo.shifts.SHIFTS`; ``None``: the modality's defaults.
        severity, seed: of every shift.
        train_labels: the labels the model was trained on (e.g. with label noise); default the clean ones.
        ood: precomputed OOD sets by name (:func:`shifted_sets`, :func:`ood_set`); when given,
            ``shifts`` is not used.
    """
    sets = shifted_sets(bundle, shifts, severity, seed) if ood is None else ood
    metrics: dict[str, float] = {}
    y_train = bundle.train.y if train_labels is None else train_labels
    for split, x, y in (("train", bundle.train.x, y_train), ("test", bundle.test.x, bundle.test.y)):
        metrics[f"{split}_loss"], metrics[f"{split}_err"] = loss_and_error(model, as_inputs(model, x), y, batch_size)
    for name, s in sets.items():
        loss, err = loss_and_error(model, as_inputs(model, s.x), s.y, batch_size, s.groups)
        metrics[f"ood.{name}_err"], metrics[f"ood.{name}_loss"] = err, loss
    return metrics


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, options_json: str) -> DataBundle:
    return load_data(name, json.loads(options_json))


def bundle_of(card: dict[str, Any]) -> DataBundle:
    """The dataset a card was trained on, rebuilt by name and options and checked against its fingerprint."""
    data = card.get("data") or {}
    name = data.get("name")
    if not isinstance(name, str):
        raise SharpnessError(f"card {card.get('id')!r} names no dataset; pass (X, Y) to sharpness.measure yourself")
    bundle = _load_cached(name, json.dumps(data.get("options") or {}, sort_keys=True))
    expected = data.get("fingerprint")
    if expected is not None and bundle.fingerprint != expected:
        raise SharpnessError(f"card {card.get('id')!r}: dataset {name!r} rebuilt with fingerprint "
                             f"{bundle.fingerprint}, but the model was trained on {expected}; the data here differ")
    return bundle


def inputs(card: dict[str, Any], split: Literal["train", "test"] = "train",
           n: int | None = None) -> tuple[Inputs, torch.Tensor]:
    """``(X, Y)`` of a card's data, ready for ``sharpness.measure(model, (X, Y), spec)``.

    Args:
        card: a model card (:func:`sharpness.zoo.load` returns it).
        split: ``"train"`` (labels with the card's label noise, as trained) or ``"test"``.
        n: the first ``n`` examples (the splits are already in a seeded random order); ``None``: all.
    """
    if split not in ("train", "test"):
        raise SharpnessError(f"split must be 'train' or 'test', got {split!r}")
    bundle = bundle_of(card)
    part = bundle.train if split == "train" else bundle.test
    x, y = part.x, part.y
    if split == "train":
        y = noisy_labels(y, float((card.get("hp") or {}).get("label_noise", 0.0)), bundle.n_classes,
                         int(card.get("seed", 0)))
    if n is not None:
        if not 1 <= n <= len(y):
            raise SharpnessError(f"n must lie in [1, {len(y)}] for the {split} split, got {n}")
        x, y = x[:n], y[:n]
    if isinstance(x, torch.Tensor):
        return row_major(x), y
    from sharpness.zoo.adapters import tokenizer_for

    return tokenizer_for(card["arch"])(list(x)), y
