"""The units of a study: one (model, definition) pair each, and the keys that name them in the store.

A unit's key is a hash of the model's fingerprint (its weights or its card), the definition and the
data's fingerprint, and of the execution mode where it is not the default, so a study folder resumes
exactly where it stopped, on any backend.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from sharpness.modes import DEFAULT_MODE
from sharpness.spec import Spec
from sharpness.study.config import EvalOptions, StudyConfig

Data = tuple[Any, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """How to rebuild one model: a model folder, or a CSV row handed to a factory.

    Attributes:
        id: the model id (the card's ``id``, or the CSV row's ``model``).
        folder: a model folder (``model.safetensors`` + ``card.json``).
        row: a CSV row (column name -> text).
        factory: ``"pkg.module:function"``; ``function(row)`` returns ``(model, card)`` or
            ``(model, card, (X, Y))``.
    """

    id: str
    folder: str | None = None
    row: tuple[tuple[str, str], ...] | None = None
    factory: str | None = None

    def describe(self) -> str:
        return json.dumps(self.folder or {"factory": self.factory, "row": dict(self.row or ())})


@dataclasses.dataclass(frozen=True)
class Unit:
    """One (model, definition) pair and everything a worker needs to compute its row."""

    key: str
    ref: ModelRef
    spec: Spec
    model_fingerprint: str
    data_fingerprint: str
    eval: EvalOptions


def plan(refs: Iterable[ModelRef], cfg: StudyConfig) -> list[Unit]:
    """One unit per (model, definition), model-major, each with its content key."""
    units = []
    for ref in refs:
        model_fp, data_fp = fingerprints(ref, cfg.eval)
        for spec in cfg.specs:
            key = unit_key(model_fp, spec, data_fp, cfg.eval.mode)
            units.append(Unit(key, ref, spec, model_fp, data_fp, cfg.eval))
    return units


def unit_key(model_fingerprint: str, spec: Spec, data_fingerprint: str, mode: str = DEFAULT_MODE) -> str:
    """The content hash naming one row: the first 32 hex digits of
    ``sha256(model fingerprint : spec id : data fingerprint)``, with ``:mode=<mode>`` appended
    for a mode other than the default.

    The default mode adds nothing, so the keys of studies written before modes existed stay
    valid; a fast-mode row never stands in for an exact one (its values may differ in the last bits).

    >>> spec = Spec(case="worst", norm="l2", rho=0.1)
    >>> unit_key("a" * 64, spec, "b" * 16)
    '225b6ad8e18a41596667a1fa035dacd1'
    >>> unit_key("a" * 64, spec, "b" * 16, "fast") != unit_key("a" * 64, spec, "b" * 16)
    True
    """
    text = f"{model_fingerprint}:{spec.id}:{data_fingerprint}"
    if mode != DEFAULT_MODE:
        text += f":mode={mode}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def fingerprints(ref: ModelRef, evaluation: EvalOptions) -> tuple[str, str]:
    """``(model, data)`` fingerprints.

    A model folder: SHA-256 of its weight file (of ``card.json`` for a folder without
    one), and a hash of :func:`data_identity`. A CSV reference: the hash of
    its row and factory, which therefore must pin the weights (a checkpoint digest or
    revision column) for the key to follow the content.
    """
    if ref.folder is not None:
        folder = Path(ref.folder)
        weights = folder / "model.safetensors"
        model_fp = _file_sha256(weights if weights.is_file() else folder / "card.json")
        data = data_identity(json.loads((folder / "card.json").read_text()), evaluation)
    else:
        model_fp = _sha256_json({"factory": ref.factory, "row": dict(ref.row or ())})
        data = {"reference": model_fp, "split": evaluation.split, "n": evaluation.n}
    return model_fp, _sha256_json(data)[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def data_identity(card: dict[str, Any], evaluation: EvalOptions) -> dict[str, Any]:
    """What ``sharpness.zoo.inputs(card, split, n)`` depends on, besides a text model's tokenizer:
    the dataset (with its fingerprint), the split and size, and for the training split the
    label noise the model was trained with (drawn per seed)."""
    out = {"data": card.get("data"), "split": evaluation.split, "n": evaluation.n}
    if evaluation.split == "train":
        out.update(label_noise=(card.get("hp") or {}).get("label_noise", 0.0), seed=card.get("seed", 0))
    return out
