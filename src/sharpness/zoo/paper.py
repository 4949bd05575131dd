"""Readers for the paper's own data, which cannot be downloaded here; they run wherever the files are.

In-distribution data (loadable by name through :mod:`sharpness.zoo.registry`, so model cards
rebuild them):

* ``imagenet``: an ImageNet folder ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``
  (classes = sorted wnids, the order of timm's 1000 logits); ``train_per_class`` and
  ``test_per_class`` files per class, chosen with a fixed seed, resized (shorter side
  ``size / crop_pct``, bicubic) and centre-cropped to ``size``.
* ``mnli``: the GLUE MNLI folder (``train.tsv``, ``dev_matched.tsv``); an example is the string
  ``premise + "\\t" + hypothesis``, which Hugging Face classifiers encode as a sentence pair.

Out-of-distribution sets (:func:`read_ood`, the ``format`` of an ``ood_sets`` entry of a grid):

* ``imagefolder``: ImageNet-R / -Sketch / -A (``root/<wnid>/*``) or ImageNet-V2
  (``root/<class index>/*``, with ``labels: index``);
* ``cifar10c``: CIFAR-10-C (``root/<corruption>.npy`` with 5 x 10000 images, severity 1 first,
  and ``root/labels.npy``); ``corruptions: all`` gives one set per corruption;
* ``hans``: HANS (``heuristics_evaluation_set.txt``), labels entailment / non-entailment.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from sharpness.errors import SharpnessError
from sharpness.zoo.datasets import DataBundle, from_tensors
from sharpness.zoo.ood import OodSet, ood_set

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MNLI_CLASSES = ("entailment", "neutral", "contradiction")
HANS_CLASSES = ("entailment", "non-entailment")
CIFAR10C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
            "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
FILE_SEED = 0


def _folder(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SharpnessError(f"{what} not found at {str(p)!r}; this setting runs where its files are present")
    return p


def _load_image(path: Path, size: int, crop_pct: float) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as f:
        im = f.convert("RGB")
    scale = round(size / crop_pct) / min(im.size)
    im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                   Image.Resampling.BICUBIC)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)


def image_folder(root: str | os.PathLike[str], per_class: int | None = None, size: int = 224,
                 crop_pct: float = 0.875, labels: Literal["name", "index"] = "name",
                 classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images ``(N, 3, size, size)`` uint8, labels and class names of a ``root/<class>/<image>`` folder.

    ``labels="index"``: folder names are class indices into ``classes`` (ImageNet-V2).
    ``per_class``: that many files per class, drawn with a fixed seed.
    """
    folder = _folder(root, "image folder")
    names = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if labels == "index":
        if classes is None:
            raise SharpnessError("labels='index' needs the model's class names")
        names = sorted(names, key=int)
        class_names = tuple(classes[int(n)] for n in names)
    else:
        class_names = tuple(names)
    rng = np.random.default_rng(FILE_SEED)
    images, targets = [], []
    for k, name in enumerate(names):
        files = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if per_class is not None and len(files) > per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        images += [_load_image(f, size, crop_pct) for f in files]
        targets += [k] * len(files)
    if not images:
        raise SharpnessError(f"no images under {str(folder)!r}")
    return np.stack(images), np.asarray(targets, dtype=np.int64), class_names


def imagenet(root: str, train_per_class: int = 2, test_per_class: int = 10, size: int = 224,
             crop_pct: float = 0.875) -> DataBundle:
    """ImageNet from ``root/train`` and ``root/val`` (see the module docstring)."""
    base = _folder(root, "ImageNet folder")
    x_train, y_train, classes = image_folder(base / "train", train_per_class, size, crop_pct)
    x_test, y_test, test_classes = image_folder(base / "val", test_per_class, size, crop_pct)
    if test_classes != classes:
        raise SharpnessError(f"{base}: train and val hold different classes")
    bundle = from_tensors("imagenet", x_train, y_train, x_test, y_test, n_classes=len(classes), modality="image")
    options = {"root": str(root), "train_per_class": train_per_class, "test_per_class": test_per_class,
               "size": size, "crop_pct": crop_pct}
    return dataclasses.replace(bundle, classes=classes, options=options)


def _tsv(path: Path, columns: Sequence[str]) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise SharpnessError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        return [[row[c] for c in columns] for row in reader]


def sentence_pairs(path: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``premise \\t hypothesis`` strings and labels of a GLUE/HANS TSV; rows without a gold label are skipped."""
    rows = [r for r in _tsv(path, ("gold_label", "sentence1", "sentence2")) if r[0] in classes]
    if not rows:
        raise SharpnessError(f"{path}: no rows with a gold label in {list(classes)}")
    texts = [f"{s1.strip()}\t{s2.strip()}" for _, s1, s2 in rows]
    return texts, np.asarray([list(classes).index(r[0]) for r in rows], dtype=np.int64)


def mnli(root: str, train_file: str = "train.tsv", test_file: str = "dev_matched.tsv",
         classes: Sequence[str] = MNLI_CLASSES) -> DataBundle:
    """GLUE MNLI; ``classes`` in the order of the models' logits (see their ``config.id2label``)."""
    base = _folder(root, "MNLI folder")
    x_train, y_train = sentence_pairs(base / train_file, classes)
    x_test, y_test = sentence_pairs(base / test_file, classes)
    bundle = from_tensors("mnli", x_train, y_train, x_test, y_test, n_classes=len(classes), modality="text")
    options = {"root": str(root), "train_file": train_file, "test_file": test_file, "classes": list(classes)}
    return dataclasses.replace(bundle, classes=tuple(classes), options=options)


def read_ood(key: str, spec: dict[str, Any], id_classes: Sequence[str]) -> dict[str, OodSet]:
    """The OOD set(s) an ``ood_sets`` entry with a ``format`` describes, mapped to the model's classes."""
    options = {k: v for k, v in spec.items() if k not in ("format", "classes")}
    mapping = spec.get("classes")
    fmt = spec.get("format")
    try:
        if fmt == "imagefolder":
            x, y, classes = image_folder(classes=id_classes, **options)
            return {key: ood_set(torch.from_numpy(x).float() / 255, torch.from_numpy(y), classes, id_classes, mapping)}
        if fmt == "cifar10c":
            return {f"{key}_{c}": ood_set(*_cifar10c(c, **{k: v for k, v in options.items() if k != "corruptions"}),
                                          id_classes, id_classes, mapping)
                    for c in _corruptions(options.get("corruptions", "all"))}
        if fmt == "hans":
            texts, labels = sentence_pairs(_folder(options["path"], "HANS file"), HANS_CLASSES)
            return {key: ood_set(texts, torch.from_numpy(labels), HANS_CLASSES, id_classes, mapping)}
    except TypeError as e:
        raise SharpnessError(f"ood_sets.{key}: bad options {sorted(options)} for format {fmt!r} ({e})") from e
    raise SharpnessError(f"ood_sets.{key}: unknown format {fmt!r}; known: imagefolder, cifar10c, hans")


def _corruptions(value: str | Sequence[str]) -> tuple[str, ...]:
    return CIFAR10C if value == "all" else tuple(value)


def _cifar10c(corruption: str, root: str, severity: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    base = _folder(root, "CIFAR-10-C folder")
    if not 1 <= severity <= 5:
        raise SharpnessError(f"severity must lie in 1..5, got {severity}")
    images = np.load(base / f"{corruption}.npy", mmap_mode="r")
    labels = np.load(base / "labels.npy")
    n = images.shape[0] // 5
    rows = slice((severity - 1) * n, severity * n)
    x = torch.from_numpy(np.ascontiguousarray(images[rows]).transpose(0, 3, 1, 2).copy()).float() / 255
    return x, torch.from_numpy(labels[rows].astype(np.int64))
