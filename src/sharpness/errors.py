"""The one error type of the package."""

from __future__ import annotations


class SharpnessError(ValueError, TypeError):
    """Bad input to ``sharpness``: the message names the offending field and value.

    It subclasses both :class:`ValueError` and :class:`TypeError`, so code that
    catches either of the built-in kinds keeps working.

    >>> raise SharpnessError("rho must be > 0, got -1.0")
    Traceback (most recent call last):
    ...
    sharpness.errors.SharpnessError: rho must be > 0, got -1.0
    """
