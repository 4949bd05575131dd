"""The sharpness cases, one module each, and their registry.

=============  =====================================================================  ================
``worst``      :mod:`~sharpness.cases.worst`: the loss increase at the Auto-PGD maximiser    every mode
``average``    :mod:`~sharpness.cases.average`: the mean loss increase under random draws    every mode
``keskar``     :mod:`~sharpness.cases.keskar`: Keskar et al.'s epsilon-sharpness             every mode
``pacbayes``   :mod:`~sharpness.cases.pacbayes`: Jiang et al.'s PAC-Bayes flatness           every mode
``trace``      :mod:`~sharpness.cases.trace`: :math:`\\mathrm{tr}(DHD)`                      exact
``eigen``      :mod:`~sharpness.cases.eigen`: :math:`\\lambda_{max}(DHD)`                    exact
=============  =====================================================================  ================

(Geodesic sharpness is the worst case in the geodesic chart, ``Spec.geometry``; its search runs exactly.)
A case is a :class:`~sharpness.cases.context.Case`: ``run(ctx)`` gets a
:class:`~sharpness.cases.context.Context` and returns a :class:`~sharpness.cases.summary.Summary`; its
searches and draws go through ``ctx.executor``, which is how it runs in every mode.

>>> sorted(CASES)
['average', 'eigen', 'keskar', 'pacbayes', 'trace', 'worst']
"""

from __future__ import annotations

from sharpness.cases import average, eigen, keskar, pacbayes, trace, worst
from sharpness.cases.context import Case, Context
from sharpness.cases.summary import Clean, Summary

CASES: dict[str, Case] = {c.CASE.name: c.CASE for c in (worst, average, trace, eigen, keskar, pacbayes)}

__all__ = ["CASES", "Case", "Clean", "Context", "Summary"]
