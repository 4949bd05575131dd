"""Studies: every model of a zoo measured under every definition, stored and correlated.

>>> from sharpness import study
>>> sorted(name for name in study.__all__)
['load', 'load_config', 'run', 'status']

``run(config, out)`` computes the rows (resumable, in-process or on Ray), ``load(folder)``
returns them as a table, ``status(folder)`` counts what is done. See ``docs/study.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sharpness.lazy import attributes

if TYPE_CHECKING:
    from sharpness.study.config import load_config
    from sharpness.study.runner import run
    from sharpness.study.store import load, status

# Imported on first use: `sharpness study --help` needs neither torch nor the study extra's packages.
__getattr__ = attributes(__name__, {"load_config": "sharpness.study.config:load_config",
                                    "run": "sharpness.study.runner:run", "load": "sharpness.study.store:load",
                                    "status": "sharpness.study.store:status"})

__all__ = ["load", "load_config", "run", "status"]
