"""Simple models with closed forms, showing why the right sharpness measure depends on the data.

* :mod:`sharpness.toy.logistic`: sharpness of the classifiers ``alpha * w`` of logistic regression;
* :mod:`sharpness.toy.diagonal`: diagonal linear networks on sparse and dense regression.

Both are run from the command line by ``sharpness toy logistic`` and ``sharpness toy diagonal``.
"""

from dataclasses import field
from typing import Any


def option(default: Any, text: str) -> Any:
    """A field of an experiment config; ``sharpness toy`` shows ``text`` as the option's help."""
    return field(default=default, metadata={"help": text})
