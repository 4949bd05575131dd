"""Where a study's models come from: a trained zoo's folder, a grid config to train first, or a CSV of factories."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Literal

from sharpness.errors import SharpnessError
from sharpness.study.config import ZooSource
from sharpness.study.local import import_factory
from sharpness.study.units import ModelRef

Backend = Literal["local", "ray"]


def resolve_zoo(source: ZooSource, folder: Path, progress: bool = True, backend: Backend = "local",
                address: str | None = None) -> list[ModelRef]:
    """The models of a study, in a stable order (training them first for a ``config`` zoo, on ``backend``)."""
    if source.kind == "csv":
        return _csv_refs(source)
    if source.kind == "config":
        if not source.path.is_file():
            raise SharpnessError(f"zoo config {str(source.path)!r} (config line {source.line}) does not exist")
        from sharpness.zoo.grid import train_grid

        paths = train_grid(source.path, folder / source.out, progress=progress, reduced=source.reduced,
                           backend=backend, address=address)
    else:
        if not source.path.is_dir():
            raise SharpnessError(f"zoo folder {str(source.path)!r} (config line {source.line}) does not exist")
        from sharpness.zoo.checkpoint import visible

        paths = sorted(p.parent for p in source.path.rglob("card.json") if visible(p, source.path))
    if not paths:
        raise SharpnessError(f"no model folder (with card.json) found for the zoo at {str(source.path)!r}")
    return _unique([ModelRef(_card_id(Path(p)), folder=str(Path(p).resolve())) for p in paths])


def _card_id(folder: Path) -> str:
    card = json.loads((folder / "card.json").read_text())
    return str(card.get("id") or folder.name)


def _csv_refs(source: ZooSource) -> list[ModelRef]:
    if not source.path.is_file():
        raise SharpnessError(f"zoo CSV {str(source.path)!r} (config line {source.line}) does not exist")
    import_factory(source.factory or "")  # fail now, not once per unit
    with source.path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "model" not in rows[0]:
        raise SharpnessError(f"zoo CSV {str(source.path)!r} needs a header with a 'model' column and one row per model")
    return _unique([ModelRef(r["model"], row=tuple(r.items()), factory=source.factory) for r in rows])


def _unique(refs: list[ModelRef]) -> list[ModelRef]:
    seen: dict[str, ModelRef] = {}
    for ref in refs:
        if ref.id in seen:
            raise SharpnessError(
                f"model id {ref.id!r} appears twice in the zoo: {seen[ref.id].describe()} and {ref.describe()}"
            )
        seen[ref.id] = ref
    return refs


