"""Reading weight files without unpickling anything: safetensors, or plain tensor checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sharpness.errors import SharpnessError


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weight file without running pickled code.

    ``.safetensors`` files are read with safetensors; any other file (``.pt``, ``.pth``, ``.bin``)
    with ``torch.load(weights_only=True)``, which refuses arbitrary objects. A checkpoint
    dict holding ``state_dict`` or ``model`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise SharpnessError(f"weight file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors reports a damaged or foreign file in several ways
            raise SharpnessError(f"{str(path)!r} is not a safetensors file ({type(e).__name__}: {e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's refusals come in several types
        raise SharpnessError(f"{str(path)!r} is not a plain tensor checkpoint (weights_only load failed: {e})") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SharpnessError(f"{str(path)!r} does not hold a dict of tensors")
    return obj
