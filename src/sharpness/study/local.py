"""Running units in this process: read the model and its inputs, measure, and turn the result into a row.

The local backend runs units one after another; the Ray backend (:mod:`sharpness.study.ray_backend`)
runs :func:`compute_unit` in its workers.
"""

from __future__ import annotations

import importlib
import itertools
import json
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.runtime import device_named, torch_threads
from sharpness.study.config import EvalOptions
from sharpness.study.units import Data, ModelRef, Unit, data_identity


def execute_local(units: list[Unit], write: Callable[[dict[str, Any]], None]) -> None:
    """Compute ``units`` in this process; each model is loaded once for all its definitions."""
    for _, group in itertools.groupby(units, key=lambda u: u.ref):
        batch = list(group)
        try:
            model, card, data = load_unit_inputs(batch[0])
        except Exception as e:
            for unit in batch:
                write(failed_row(unit, e))
            continue
        for unit in batch:
            write(measure_unit(unit, model, card, data))


def compute_unit(unit: Unit, content: tuple[bytes | None, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Load, measure and describe one unit as a row; never raises for the unit's own errors.

    ``content``: the model folder's weights and card, sent by the driver (no shared file system needed).
    """
    with torch_threads(unit.eval.threads):
        try:
            model, card, data = load_unit_inputs(unit, content)
        except Exception as e:
            return failed_row(unit, e)
        return measure_unit(unit, model, card, data)


def measure_unit(unit: Unit, model: nn.Module, card: dict[str, Any], data: Data) -> dict[str, Any]:
    """``sharpness.measure(model, data, unit.spec, mode=unit.eval.mode)`` as a row (``failed`` if it raises)."""
    from sharpness.measure import measure

    try:
        result = measure(model, data, unit.spec, mode=unit.eval.mode, progress=False)  # the study shows its own bar
    except Exception as e:
        return failed_row(unit, e, card)
    return {
        **_identity(unit),
        "status": "done",
        "value": result.value,
        "stderr": result.stderr,
        "error_increase": result.error_increase,
        "radius": result.radius,
        "clean_loss": result.clean_loss,
        "clean_error": result.clean_error,
        "seconds": result.seconds,
        "n_forward": result.n_forward,
        "n_backward": result.n_backward,
        "result": json.dumps(result.to_dict()),
        "card": json.dumps(card, default=str),
        "host": socket.gethostname(),
    }


def failed_row(unit: Unit, error: BaseException, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of a unit whose loading or measurement raised ``error``."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return {
        **_identity(unit),
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": trace,
        "card": None if card is None else json.dumps(card, default=str),
        "host": socket.gethostname(),
    }


def _identity(unit: Unit) -> dict[str, Any]:
    return {
        "key": unit.key,
        "model": unit.ref.id,
        "spec": str(unit.spec),
        "spec_id": unit.spec.id,
        "model_fingerprint": unit.model_fingerprint,
        "data_fingerprint": unit.data_fingerprint,
    }


# ------------------------------------------------------------ model and data
def load_unit_inputs(unit: Unit, content: tuple[bytes | None, dict[str, Any]] | None = None,
                     ) -> tuple[nn.Module, dict[str, Any], Data]:
    """The unit's model (on the evaluation device), its card and the ``(X, Y)`` it is measured on.

    ``content`` (weights bytes, card) stands in for the unit's model folder when given.
    """
    device = device_named(unit.eval.device, "eval.device")
    ref = unit.ref
    if content is not None:
        from sharpness.zoo.checkpoint import decode

        weights, card = content
        model = decode(weights, card)
        data = _inputs(card, unit.eval)
    elif ref.folder is not None:
        from sharpness.zoo import load

        model, card = load(ref.folder)
        data = _inputs(card, unit.eval)
    else:
        model, card, given = _call_factory(ref)
        data = given if given is not None else _inputs(card, unit.eval)
    return model.to(device), card, _to_device(data, device)


_INPUTS: dict[str, Data] = {}


def _inputs(card: dict[str, Any], evaluation: EvalOptions) -> Data:
    """``sharpness.zoo.inputs`` of a card, cached: the definitions of one model share their data."""
    from sharpness.zoo import inputs

    key = json.dumps({**data_identity(card, evaluation), "arch": card.get("arch")}, sort_keys=True, default=str)
    if key not in _INPUTS:
        if len(_INPUTS) >= 2:
            _INPUTS.pop(next(iter(_INPUTS)))
        _INPUTS[key] = inputs(card, evaluation.split, n=evaluation.n)
    return _INPUTS[key]


def _call_factory(ref: ModelRef) -> tuple[nn.Module, dict[str, Any], Data | None]:
    built = import_factory(ref.factory or "")(dict(ref.row or ()))
    if not isinstance(built, tuple) or len(built) not in (2, 3):
        raise SharpnessError(f"factory {ref.factory!r} must return (model, card) or (model, card, (X, Y))")
    model, card = built[0], built[1]
    if not isinstance(model, nn.Module) or not isinstance(card, dict):
        raise SharpnessError(
            f"factory {ref.factory!r} returned {type(model).__name__}, {type(card).__name__}; "
            "expected an nn.Module and a card dict"
        )
    return model.eval(), card, built[2] if len(built) == 3 else None


def import_factory(path: str) -> Callable[[dict[str, str]], Any]:
    """The function named by ``"package.module:function"``."""
    module_name, _, name = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise SharpnessError(f"cannot import the model factory {path!r}: {e}") from None
    if not callable(function):
        raise SharpnessError(f"the model factory {path!r} is not callable")
    return function


def _to_device(data: Data, device: torch.device) -> Data:
    from sharpness.zoo.model_inputs import to_device

    x, y = data
    return to_device(x, device), y.to(device)

