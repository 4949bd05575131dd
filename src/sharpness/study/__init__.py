"""Studies: every model of a zoo measured under every definition, stored and correlated.

>>> from sharpness import study
>>> sorted(name for name in study.__all__)
['load', 'load_config', 'run', 'status']

``run(config, out)`` computes the rows (resumable, in-process or on Ray), ``load(folder)``
returns them as a table, ``status(folder)`` counts what is done. See ``docs/study.md``.
"""

from sharpness.study.config import load_config
from sharpness.study.runner import run
from sharpness.study.store import load, status

__all__ = ["load", "load_config", "run", "status"]
