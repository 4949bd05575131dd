"""Model folders: ``model.safetensors`` plus ``card.json``; loading never unpickles.

The card holds ``id``, ``arch`` (what :func:`sharpness.zoo.archs.build`
needs), ``hp``, ``seed``, ``metrics``, ``data``, ``epochs``, ``wall_time`` and ``versions``.
Weights are stored with safetensors in the model's dtype (or a smaller one the card records
as ``weights_dtype``); a model saved on the CPU reloads bit for bit. The card is written
into a partial folder that is renamed into place when complete (:func:`folder_atomically`), so a
model folder is always complete, whenever the process that writes it is killed.

Model ids are stable: the architecture name and 10 hex digits of a SHA-256 over the
configured architecture, the hyper-parameters that differ from their defaults, the
seed and the dataset name.

>>> model_id({"name": "mlp", "kwargs": {}}, {"lr": 0.1}, 0, "mnist1d")
'mlp-...'
>>> model_id({"name": "mlp", "kwargs": {}}, {"lr": 0.1}, 0, "mnist1d") == model_id(
...     {"kwargs": {}, "name": "mlp"}, {"lr": 0.1}, 0, "mnist1d")
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.zoo.weights import read_weights

WEIGHTS = "model.safetensors"
CARD = "card.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def canonical(obj: Any) -> str:
    """Compact JSON with sorted keys: equal content gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def model_id(arch: dict[str, Any], hp: dict[str, Any], seed: int, data_name: str) -> str:
    """``<arch name>-<10 hex digits>`` derived from what defines the model."""
    digest = hashlib.sha256(canonical({"arch": arch, "hp": hp, "seed": seed, "data": data_name}).encode())
    return f"{arch['name']}-{digest.hexdigest()[:10]}"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it: ``path`` is never half-written."""
    text = json.dumps(obj, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unique_state(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, contiguous, with tensors that share storage stored once."""
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() and key in seen:
            continue
        seen.add(key)
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        state[name] = t.contiguous().clone()
    return state


def save(folder: str | os.PathLike[str], model: nn.Module, card: dict[str, Any],
         weights_dtype: str | None = None) -> Path:
    """Write ``model.safetensors`` and then ``card.json`` (atomically) into ``folder``.

    Args:
        folder: created if missing.
        model: saved from whatever device it is on.
        card: JSON-serialisable; must hold ``arch``. ``dtype`` (the model's floating-point dtype,
            restored on load) and ``weights_dtype`` (when given) are added.
        weights_dtype: store floating-point weights in this dtype (e.g. ``"float16"``);
            they reload in the model's dtype. ``None`` keeps them exact.
    """
    weights, full = encode(model, card, weights_dtype)
    return write_folder(Path(folder), weights, full)


def encode(model: nn.Module, card: dict[str, Any], weights_dtype: str | None = None) -> tuple[bytes, dict[str, Any]]:
    """The model folder's content in memory: safetensors bytes and the card (with ``dtype`` added).

    This is what a remote worker sends back, so that the driver alone writes folders.
    """
    from safetensors.torch import save

    if "arch" not in card:
        raise SharpnessError(f"a card needs 'arch' to rebuild the model; got keys {sorted(card)}")
    if weights_dtype is not None and weights_dtype not in DTYPES:
        raise SharpnessError(f"weights_dtype must be one of {sorted(DTYPES)}, got {weights_dtype!r}")
    dtype = DTYPES[weights_dtype] if weights_dtype else None
    card = {**card, "dtype": _float_dtype(model), **({"weights_dtype": weights_dtype} if weights_dtype else {})}
    return save(_unique_state(model, dtype), metadata={"format": "pt"}), card


def write_folder(folder: Path, weights: bytes | None, card: dict[str, Any]) -> Path:
    """Write a model folder atomically from its content (``weights=None``: a card-only, imported model)."""
    with folder_atomically(folder) as partial:
        if weights is not None:
            (partial / WEIGHTS).write_bytes(weights)
        write_json_atomic(partial / CARD, card)
    return folder


def decode(weights: bytes | None, card: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The network of a model folder's content held in memory (as :func:`load` rebuilds it from the folder)."""
    from safetensors.torch import load as load_bytes

    from sharpness.zoo.archs import build

    model = build(card["arch"], pretrained=weights is None).to(DTYPES[card.get("dtype", "float32")])
    if weights is not None:
        load_state(model, load_bytes(weights), f"the weights of {card.get('id', 'a model')}")
    return model.to(device).eval()


# Partial model folders are built here, under the zoo, and renamed into place when complete; listings skip
# every path with a component that starts with a dot.
PARTIAL = ".partial"


@contextlib.contextmanager
def folder_atomically(folder: Path) -> Iterator[Path]:
    """A fresh folder to fill; renamed to ``folder`` when the block completes, removed if it raises.

    A process killed at any instant leaves ``folder`` complete (the old copy or the new one) or absent (killed
    between moving the old copy aside and renaming the new one in: the next run writes it again); never half.
    """
    staging = folder.parent / PARTIAL
    staging.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=staging, prefix=f"{folder.name}."))
    old = None
    try:
        yield partial
        if folder.exists():  # an earlier copy moves aside in one rename: deleting it in place is not atomic
            old = Path(tempfile.mkdtemp(dir=staging, prefix=f"{folder.name}.old."))
            os.replace(folder, old / folder.name)
        os.replace(partial, folder)
    finally:
        for leftover in (partial, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def visible(path: Path, root: Path) -> bool:
    """Whether ``path`` (below ``root``) lies outside every hidden folder, such as the partial folders."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _float_dtype(model: nn.Module) -> str:
    found = {str(t.dtype).removeprefix("torch.") for t in model.state_dict().values() if t.is_floating_point()}
    return found.pop() if len(found) == 1 else "float32"


def read_card(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of a model folder."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise SharpnessError(f"{str(folder)!r} is not a model folder: {CARD} is missing")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SharpnessError(f"{str(path)!r} is not valid JSON ({e}); the folder is damaged: train or copy it again"
                             ) from None
    if not isinstance(card, dict) or "arch" not in card:
        raise SharpnessError(f"{str(path)!r} is not a model card: it needs an object with 'arch'")
    return card


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` in the model's dtypes; every entry must match.

    Entries skipped on save because they share storage with another are filled by
    ``load_state_dict``'s aliasing (they are views of the same tensor in the model).
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state and not _aliased(own, k, state)]
    if unexpected or wrong or missing:
        raise SharpnessError(f"{source} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                             f"wrong shape {wrong[:5]}")
    with torch.no_grad():
        for name, t in state.items():
            own[name].copy_(t)


def _aliased(own: dict[str, torch.Tensor], key: str, state: dict[str, torch.Tensor]) -> bool:
    ptr = own[key].untyped_storage().data_ptr()
    return any(own[k].untyped_storage().data_ptr() == ptr for k in state if k in own)


def load(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model folder's network in eval mode; returns ``(model, card)``.

    A folder without ``model.safetensors`` (an imported model whose ``arch`` names its
    own weights, e.g. a timm model) is built with its pretrained weights.
    """
    from sharpness.zoo.archs import build

    card = read_card(folder)
    weights = Path(folder) / WEIGHTS
    model = build(card["arch"], pretrained=not weights.is_file()).to(DTYPES[card.get("dtype", "float32")])
    if weights.is_file():
        load_state(model, read_weights(weights), str(weights))
    return model.to(device).eval(), card


def read_folder(folder: str | os.PathLike[str]) -> tuple[bytes | None, dict[str, Any]]:
    """A model folder's content in memory (weights bytes or ``None``, card), to ship to a remote worker."""
    weights = Path(folder) / WEIGHTS
    return (weights.read_bytes() if weights.is_file() else None), read_card(folder)
