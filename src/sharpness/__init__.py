"""Reparametrization-invariant sharpness of trained networks, and whether it predicts generalization.

>>> from sharpness import Spec
>>> str(Spec(case="worst", norm="linf", rho=0.002))
'worst-linf-elementwise:rho=0.002'
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from sharpness.errors import SharpnessError
from sharpness.lazy import attributes
from sharpness.spec import Spec

if TYPE_CHECKING:
    from sharpness.measure import Result, measure

__all__ = ["Result", "SharpnessError", "Spec", "measure"]
__version__ = "0.1.0"

# measure() needs torch; importing it on first use keeps `import sharpness` (and `sharpness --help`) light.
__getattr__ = attributes(__name__, {"measure": "sharpness.measure:measure", "Result": "sharpness.measure:Result"})


class _Package(types.ModuleType):
    """``sharpness.measure`` names the function, as the public API says, also once the module of the same name
    is imported: the import system then sets the package attribute to the module, which is replaced here by its
    function."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "measure" and isinstance(value, types.ModuleType):
            value = value.measure
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
