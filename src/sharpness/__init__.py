"""Reparametrization-invariant sharpness of trained networks, and whether it predicts generalization.

>>> from sharpness import Spec
>>> str(Spec(case="worst", norm="linf", rho=0.002))
'worst-linf-elementwise:rho=0.002'
"""

from sharpness.errors import SharpnessError
from sharpness.measure import Result, measure
from sharpness.spec import Spec

__all__ = ["Result", "SharpnessError", "Spec", "measure"]
__version__ = "0.1.0"
