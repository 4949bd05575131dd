"""Package attributes imported on first use, so that light entry points (``sharpness --help``) stay light.

>>> get = attributes("sharpness", {"Spec": "sharpness.spec:Spec", "spec": "sharpness.spec"})
>>> get("Spec").__name__, get("spec").__name__
('Spec', 'sharpness.spec')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attributes(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name`` by ``table``: ``"module:attr"`` or a whole ``"module"``."""

    def resolve(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attr) if attr else loaded

    return resolve


def command(target: str) -> Callable[..., Any]:
    """The function ``"module:function"``, imported when first called (a command's heavy imports wait for it).

    >>> command("math:sqrt")(4.0)
    2.0
    """
    module, _, name = target.partition(":")

    def run(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    run.__qualname__ = run.__name__ = name
    return run
