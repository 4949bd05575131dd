"""A user's data in a file, as the ``(X, Y)`` that :func:`sharpness.measure` draws its m-batches from.

* tensors: ``.npz`` (``numpy.load`` without pickles) or ``.pt`` / ``.pth`` (``torch.load(weights_only=True)``)
  holding inputs under ``x`` (or ``X``, ``inputs``) and integer targets under ``y`` (or ``Y``, ``labels``,
  ``targets``); a ``.pt`` file may also hold an ``(x, y)`` pair;
* text: ``.csv``, ``.jsonl`` or ``.parquet`` with a ``text`` column (and optionally ``text_pair``) and a
  ``label`` column of class indices or class names, tokenised by the model's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from sharpness.errors import SharpnessError

X_KEYS = ("x", "X", "inputs")
Y_KEYS = ("y", "Y", "labels", "targets")
TENSOR_SUFFIXES = (".npz", ".pt", ".pth")
TEXT_SUFFIXES = (".csv", ".jsonl", ".parquet")

Encode = Callable[[list[Any]], dict[str, torch.Tensor]]


def read_data(path: str | Path, encode: Encode | None = None,
              label_ids: Mapping[str, int] | None = None) -> tuple[Any, torch.Tensor]:
    """``(X, Y)`` from ``path``; text files need ``encode`` (the model's tokenizer) and, for class names,
    ``label_ids`` (name -> index, e.g. a Hugging Face config's ``label2id``)."""
    path = Path(path)
    if not path.is_file():
        raise SharpnessError(f"--data: {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in TENSOR_SUFFIXES:
        return _tensors(path)
    if suffix in TEXT_SUFFIXES:
        if encode is None:
            raise SharpnessError(f"--data: {str(path)!r} holds text; it needs a text model (a Hugging Face folder)")
        return _texts(path, encode, label_ids)
    raise SharpnessError(f"--data: {str(path)!r}: unknown format {suffix!r}; expected one of "
                         f"{[*TENSOR_SUFFIXES, *TEXT_SUFFIXES]}")


def _tensors(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if path.suffix.lower() == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as f:
                found: Any = {k: torch.from_numpy(f[k]) for k in f.files}
        except (ValueError, OSError) as e:
            raise SharpnessError(f"--data: {str(path)!r} is not a plain .npz file ({e})") from None
    else:
        try:
            found = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # the unpickler's refusals come in several types
            raise SharpnessError(f"--data: {str(path)!r} is not a plain tensor file ({e})") from None
    if isinstance(found, (tuple, list)) and len(found) == 2:
        x, y = found
    elif isinstance(found, dict):
        x, y = _pick(found, X_KEYS, path), _pick(found, Y_KEYS, path)
    else:
        raise SharpnessError(f"--data: {str(path)!r} holds {type(found).__name__}; expected x and y")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise SharpnessError(f"--data: {str(path)!r}: x and y must be tensors")
    if y.is_floating_point() and bool((y == y.round()).all()):
        y = y.long()  # class indices saved as floats
    return x, y


def _pick(found: dict[str, Any], keys: tuple[str, ...], path: Path) -> Any:
    for k in keys:
        if k in found:
            return found[k]
    raise SharpnessError(f"--data: {str(path)!r} has {sorted(found)}; expected one of {list(keys)}")


def _texts(path: Path, encode: Encode, label_ids: Mapping[str, int] | None) -> tuple[Any, torch.Tensor]:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        table = (pd.read_csv(path) if suffix == ".csv" else pd.read_json(path, lines=True) if suffix == ".jsonl"
                 else pd.read_parquet(path))
    except Exception as e:  # the readers' parse errors
        raise SharpnessError(f"--data: {str(path)!r} could not be read ({type(e).__name__}: {e})") from None
    missing = [c for c in ("text", "label") if c not in table.columns]
    if missing:
        raise SharpnessError(f"--data: {str(path)!r} has columns {list(table.columns)}; it needs 'text' and 'label'")
    texts = list(table["text"].astype(str))
    items: list[Any] = list(zip(texts, table["text_pair"].astype(str))) if "text_pair" in table.columns else texts
    return encode(items), torch.tensor(_labels(table["label"], label_ids, path))


def _labels(column: Any, label_ids: Mapping[str, int] | None, path: Path) -> list[int]:
    values = list(column)
    if all(isinstance(v, (int,)) or (hasattr(v, "is_integer") and float(v).is_integer()) for v in values):
        return [int(v) for v in values]
    if label_ids is None:
        raise SharpnessError(f"--data: {str(path)!r} has class names as labels but the model names no classes")
    unknown = sorted({str(v) for v in values} - set(label_ids))
    if unknown:
        raise SharpnessError(f"--data: {str(path)!r}: labels {unknown[:5]} are not among the model's classes "
                             f"{sorted(label_ids)}")
    return [int(label_ids[str(v)]) for v in values]
