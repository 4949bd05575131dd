r"""Batches, model calls, logit normalisation, loss and 0-1 error.

A batch is ``(inputs, targets)`` — ``inputs`` a tensor, a tuple of positional
tensors or a mapping of keyword tensors — or a Hugging Face style mapping whose
``labels`` entry is the target and whose other entries are keyword inputs.
An output with a ``.logits`` attribute (or ``"logits"`` key) is unwrapped, and so is a tuple
whose first entry is a tensor (Hugging Face's ``return_dict=False``).

Logit normalisation maps :math:`f \mapsto (f - \bar f) / \max(\|f - \bar f\|_2, 10^{-10})`
over the class dimension:

>>> import torch
>>> normalize_logits(torch.tensor([[1.0, 3.0]]))
tensor([[-0.7071,  0.7071]])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sharpness.errors import SharpnessError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Batch:
    """One m-batch split into the model's call arguments and the target."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    target: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        found = [a for a in self.args if isinstance(a, torch.Tensor)]
        found += [v for v in self.kwargs.values() if isinstance(v, torch.Tensor)]
        return [*found, self.target]

    def __len__(self) -> int:
        return int(self.target.shape[0])


def as_batch(batch: object, index: int) -> Batch:
    """Split a user batch into call arguments and target, or say why it cannot be."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise SharpnessError(f"batch {index}: a mapping batch needs a 'labels' entry, got keys {sorted(batch)}")
        kwargs = {k: v for k, v in batch.items() if k != "labels"}
        return Batch((), kwargs, _target(batch["labels"], index))
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and len(batch) == 2:
        inputs, target = batch
        if isinstance(inputs, torch.Tensor):
            return Batch((inputs,), {}, _target(target, index))
        if isinstance(inputs, Mapping):
            return Batch((), dict(inputs), _target(target, index))
        if isinstance(inputs, Sequence) and inputs and all(isinstance(x, torch.Tensor) for x in inputs):
            return Batch(tuple(inputs), {}, _target(target, index))
    raise SharpnessError(
        f"batch {index} has an unsupported shape ({_describe(batch)}); expected (inputs, targets) "
        "or a mapping with 'labels'"
    )


def _target(target: object, index: int) -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise SharpnessError(f"batch {index}: targets must be a tensor, got {_describe(target)}")
    if target.dim() == 0 or target.shape[0] == 0:
        raise SharpnessError(
            f"batch {index}: targets must have a non-empty first dimension, got shape {tuple(target.shape)}"
        )
    return target


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of {len(x)}: [" + ", ".join(_describe(v) for v in x[:4]) + "]"
    return type(x).__name__


def logits_of(output: object) -> torch.Tensor:
    """The logits tensor inside a model output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]  # Hugging Face models with return_dict=False put the logits first
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if isinstance(logits, torch.Tensor):
        return logits
    raise SharpnessError(f"the model returned {type(output).__name__}; expected a tensor or an object with .logits")


def normalize_logits(logits: torch.Tensor) -> torch.Tensor:
    """Centre the logits over the last dimension and scale them to unit L2 norm."""
    centred = logits - logits.mean(dim=-1, keepdim=True)
    norm = torch.linalg.vector_norm(centred, dim=-1, keepdim=True)
    return centred / norm.clamp_min(1e-10)


def default_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; ``(N, T, K)`` sequence outputs ignore targets equal to -100."""
    if logits.dim() > 2:
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


def is_classification(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """The 0-1 error is defined for ``(N, K >= 2)`` logits with integer targets."""
    return (
        logits.dim() == 2 and logits.shape[1] >= 2 and target.dim() == 1 and not target.is_floating_point()
        and logits.shape[0] == target.shape[0]
    )


def zero_one_error(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of misclassified examples, as a 0-d tensor (no host sync)."""
    return (logits.argmax(dim=1) != target).to(logits.dtype).mean()


@dataclass(frozen=True)
class Objective:
    """Evaluates loss (and error) of ``model`` on a batch at the current weights."""

    model: nn.Module
    loss_fn: LossFn | None
    logit_norm: bool

    def logits(self, batch: Batch) -> torch.Tensor:
        """The model's output on ``batch``: in the model's dtype, except that half-precision logits are cast to
        float32, so that the loss, its increase and the search's comparisons are not rounded to a few bits."""
        out = logits_of(self.model(*batch.args, **batch.kwargs))
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return normalize_logits(out) if self.logit_norm else out

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.loss_fn is None:
            return default_loss(logits, batch.target)
        return self.loss_fn(logits, batch.target)

    def __call__(self, batch: Batch, with_error: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.logits(batch)
        error = zero_one_error(logits.detach(), batch.target) if with_error else None
        return self.loss(logits, batch), error


def check_clean_output(logits: torch.Tensor, batch: Batch, index: int, logit_norm: bool, default: bool) -> None:
    """Validate the clean output of one batch: shapes, target range, logit count."""
    if logit_norm and (logits.dim() < 2 or logits.shape[-1] < 2):
        raise SharpnessError(f"logit_norm needs outputs with K >= 2 classes, got output shape {tuple(logits.shape)}")
    target = batch.target
    if not default:
        return
    if target.is_floating_point():
        if target.shape != logits.shape:  # class probabilities are the one float target cross-entropy takes
            raise SharpnessError(
                f"batch {index}: the default cross-entropy takes integer class targets of shape "
                f"{tuple(logits.shape[:-1])} or class probabilities of shape {tuple(logits.shape)}; got float targets "
                f"of shape {tuple(target.shape)} (pass loss_fn=, e.g. torch.nn.functional.mse_loss, for regression)"
            )
        return
    if logits.dim() == 0 or logits.shape[0] != len(batch):
        raise SharpnessError(f"batch {index}: the model returned {tuple(logits.shape)} for {len(batch)} targets")
    if logits.dim() < 2 or target.shape != logits.shape[:-1]:
        raise SharpnessError(
            f"batch {index}: targets of shape {tuple(target.shape)} do not match logits of shape "
            f"{tuple(logits.shape)} for the default cross-entropy"
        )
    k = logits.shape[-1]
    valid = target[target != IGNORE_INDEX]
    if target.numel() and not valid.numel():
        raise SharpnessError(f"batch {index}: every target is {IGNORE_INDEX} (ignored by the cross-entropy), so its "
                             "loss is undefined; keep at least one real target per m-batch")
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= k):
        raise SharpnessError(
            f"batch {index}: targets must lie in [0, {k - 1}] for {k} logits, got values in "
            f"[{int(valid.min())}, {int(valid.max())}]"
        )
