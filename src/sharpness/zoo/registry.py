"""Every dataset loadable by name, in one registry: what a grid's ``data: {name, options}`` and a model
card's ``data`` rebuild.

:data:`LOADERS` maps a name to a function ``(**options) -> DataBundle``: the built-in datasets of
:mod:`sharpness.zoo.datasets` (through :func:`sharpness.zoo.datasets.load`, which also takes
``n_train``, ``n_test`` and ``seed``) and the readers of the paper's own data in :mod:`sharpness.zoo.paper`.

>>> sorted(LOADERS)
['bbc_news', 'cifar10', 'cifar100', 'digits', 'fashion_mnist', 'imagenet', 'mnist1d', 'mnli']
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from sharpness.errors import SharpnessError
from sharpness.zoo import datasets, paper
from sharpness.zoo.datasets import DataBundle

LOADERS: dict[str, Callable[..., DataBundle]] = {
    **{name: functools.partial(datasets.load, name) for name in datasets.DATASETS},
    "imagenet": paper.imagenet,
    "mnli": paper.mnli,
}


def load_data(name: str, options: dict[str, Any] | None = None) -> DataBundle:
    """The dataset registered as ``name``, built with ``options``.

    >>> load_data("digits", {"n_train": 10, "n_test": 5}).train.x.shape
    torch.Size([10, 1, 8, 8])
    >>> load_data("mnli", {"root": "x", "folder": "y"})
    Traceback (most recent call last):
    ...
    sharpness.errors.SharpnessError: bad options ['folder', 'root'] for dataset 'mnli': got an unexpected keyword ...
    """
    if name not in LOADERS:
        raise SharpnessError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    loader = LOADERS[name]
    try:  # the built-in loader checks its options itself, naming those it accepts
        inspect.signature(loader).bind(**(options or {}))
    except TypeError as e:
        raise SharpnessError(f"bad options {sorted(options or {})} for dataset {name!r}: {e}") from e
    return loader(**(options or {}))
