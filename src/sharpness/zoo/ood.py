"""Out-of-distribution test sets: inputs, labels, and how their classes map onto the model's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sharpness.errors import SharpnessError


@dataclass(frozen=True)
class OodSet:
    r"""An out-of-distribution test set with its own label space.

    ``groups[k]`` lists the model's logit columns that make up class ``k`` of this set; its
    logit is :math:`\log \sum_{j \in \text{groups}[k]} e^{f_j}` (the merged probability), which
    restricts the model to a class subset (ImageNet-R/-A: 200 of 1000) or merges classes
    (HANS: non-entailment = neutral + contradiction).
    """

    x: torch.Tensor | list[str]
    y: torch.Tensor
    groups: tuple[tuple[int, ...], ...] | None = None


def ood_set(x: torch.Tensor | list[str], y: torch.Tensor, classes: Sequence[str], id_classes: Sequence[str],
            mapping: dict[str, list[str]] | None = None) -> OodSet:
    """An :class:`OodSet` with labels in ``classes`` for a model trained on ``id_classes``.

    Each class maps to the ID classes ``mapping`` lists for it, else to the ID class of the same name.

    >>> ood_set(torch.zeros(1, 2), torch.tensor([1]), ["b", "ac"], ["a", "b", "c"], {"ac": ["a", "c"]}).groups
    ((1,), (0, 2))
    """
    index = {name: j for j, name in enumerate(id_classes)}
    groups = []
    for name in classes:
        members = (mapping or {}).get(name, [name])
        missing = [m for m in members if m not in index]
        if missing:
            raise SharpnessError(f"OOD class {name!r} maps to {missing}, which the model's classes do not include "
                                 f"(they begin {list(id_classes)[:5]}); map it with `classes:`")
        groups.append(tuple(index[m] for m in members))
    identity = groups == [(j,) for j in range(len(id_classes))]
    return OodSet(x, y, None if identity else tuple(groups))
