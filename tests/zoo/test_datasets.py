"""Dataset loaders on the real data that is here and on tiny files written in the real formats."""

import gzip
import io
import json
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sharpness import SharpnessError
from sharpness.zoo.datasets import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    MNIST1D_ARGS,
    DataBundle,
    from_tensors,
    from_torch_dataset,
    load,
    read_idx,
)
from testkit import needs_fashion_mnist

needs_fashion = needs_fashion_mnist

BBC = ("business", "entertainment", "politics", "sports", "tech")

# name, options, input shape, train size, test size, class names (or count), modality
REAL = [
    ("mnist1d", {"n_train": 300, "n_test": 100}, (1, 40), 300, 100, 10, "signal"),
    pytest.param("fashion_mnist", {"n_train": 500}, (1, 28, 28), 500, 10000, FASHION_MNIST_CLASSES, "image",
                 marks=needs_fashion),
    ("digits", {}, (1, 8, 8), 1438, 359, 10, "image"),
    ("bbc_news", {"n_test": 200, "seed": 3}, None, 1781, 200, BBC, "text"),
]


def check_bundle(b: DataBundle) -> None:
    """Invariants every bundle satisfies, whatever its source."""
    for split in (b.train, b.test):
        assert split.y.dtype == torch.int64 and split.y.dim() == 1 and len(split.x) == len(split.y)
        assert int(split.y.min()) >= 0 and int(split.y.max()) < b.n_classes == len(b.classes)
    assert len(b.fingerprint) == 16 and int(b.fingerprint, 16) >= 0
    json.dumps(b.options)
    if b.modality == "text":
        assert b.mean is b.std is None and all(isinstance(t, str) and t for t in b.train.x)
        return
    x = b.train.x.double()
    dims = [d for d in range(x.dim()) if d != 1]
    assert b.mean == pytest.approx(x.mean(dim=dims).tolist(), abs=1e-9)
    std = x.std(dim=dims, unbiased=False)
    assert b.std == pytest.approx(torch.where(std > 0, std, 1.0).tolist(), abs=1e-9)


@pytest.mark.parametrize(("name", "options", "shape", "n_train", "n_test", "classes", "modality"), REAL)
def test_real_loaders(name, options, shape, n_train, n_test, classes, modality):
    b = load(name, **options)
    check_bundle(b)
    assert (b.name, b.modality, len(b.train), len(b.test)) == (name, modality, n_train, n_test)
    assert b.classes == classes if isinstance(classes, tuple) else b.n_classes == classes
    if shape is not None:
        assert b.train.x.dtype == torch.float32 and tuple(b.train.x.shape[1:]) == tuple(b.test.x.shape[1:]) == shape
    if modality == "image":
        assert float(b.train.x.min()) >= 0 and float(b.train.x.max()) <= 1
    rebuilt = load(b.name, **b.options)  # the recorded options rebuild exactly this bundle
    assert rebuilt.fingerprint == b.fingerprint and torch.equal(rebuilt.test.y, b.test.y)


def test_mnist1d_default_is_the_generator_default():
    b = load("mnist1d")
    assert tuple(b.train.x.shape) == (4000, 1, 40) and tuple(b.test.x.shape) == (1000, 1, 40)
    assert b.mean[0] == pytest.approx(0, abs=0.01) and b.std[0] == pytest.approx(1, abs=0.01)  # standardised


@needs_fashion
def test_fashion_mnist_test_set_is_balanced():
    y = load("fashion_mnist", n_train=10).test.y
    assert torch.bincount(y).tolist() == [1000] * 10


@pytest.mark.parametrize(("name", "total"), [("digits", 1797), ("bbc_news", 2225)])
def test_fixed_splits_are_stratified_and_independent_of_seed(name, total):
    a, b = load(name, seed=0), load(name, seed=7)
    assert a.fingerprint == b.fingerprint
    train, test = torch.bincount(a.train.y), torch.bincount(a.test.y)
    assert int(train.sum() + test.sum()) == total
    assert test.tolist() == [round(0.2 * n) for n in (train + test).tolist()]
    assert len(set(a.train.y[:50].tolist())) > 3  # classes are interleaved, not in blocks


def test_subsets_are_seeded_and_nested():
    small, big = load("digits", n_train=20, n_test=10, seed=3), load("digits", n_train=50, n_test=10, seed=3)
    assert torch.equal(small.train.x, big.train.x[:20]) and torch.equal(small.test.x, big.test.x)
    other = load("digits", n_train=20, n_test=10, seed=4)
    assert not torch.equal(other.train.x, small.train.x) and other.fingerprint != small.fingerprint
    assert load("digits", n_train=20, n_test=10, seed=3).fingerprint == small.fingerprint


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: load("imagenet"), "unknown dataset 'imagenet'"),
        (lambda: load("digits", root="/x"), "bad options"),
        (lambda: load("digits", n_train=0), "n_train"),
        (lambda: load("digits", n_test=360), r"n_test must be an int in \[1, 359\]"),
        (lambda: load("digits", n_train=True), "n_train"),
        (lambda: load("digits", seed=None), "seed must be an int"),
        (lambda: load("mnist1d", generator={"num_sample": 10}), "num_sample"),
        (lambda: load("cifar100", label="medium"), "medium"),
        (lambda: load("fashion_mnist", root="/nonexistent"), "apt-get install dataset-fashion-mnist"),
        (lambda: load("cifar10", root="/nonexistent"), "cifar-10-python.tar.gz"),
        (lambda: load("bbc_news", root="/nonexistent"), "holds no class folders"),
    ],
)
def test_bad_requests_say_what_is_wrong(call, match):
    with pytest.raises(SharpnessError, match=match):
        call()


def test_mnist1d_cache_is_keyed_by_arguments_and_leaves_global_rng(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARPNESS_CACHE", str(tmp_path))
    from mnist1d.data import get_dataset_args

    assert {k: v for k, v in get_dataset_args(as_dict=True).items() if k != "url"} == MNIST1D_ARGS
    random.seed(1)
    np.random.seed(1)
    expected = random.random(), np.random.rand()
    random.seed(1)
    np.random.seed(1)
    b = load("mnist1d", generator={"num_samples": 200})
    assert (random.random(), np.random.rand()) == expected  # make_dataset reseeds; we restore
    assert (len(b.train), len(b.test)) == (160, 40)
    [path] = tmp_path.glob("mnist1d-*.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(path, **{**arrays, "x_test": np.zeros_like(arrays["x_test"])})  # proves the cache is read
    assert float(load("mnist1d", generator={"num_samples": 200}).test.x.abs().sum()) == 0
    load("mnist1d", generator={"num_samples": 100})
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2


# --------------------------------------------------------------------------- Fashion-MNIST format


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_loader_reads_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    parts = {"train": (rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10),
             "t10k": (rng.integers(0, 256, (4, 28, 28)), np.array([9, 0, 3, 3]))}
    suffix = ".gz" if compress else ""
    for stem, (images, labels) in parts.items():
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
    b = load("fashion_mnist", root=tmp_path)
    check_bundle(b)
    assert torch.equal(b.train.x[:, 0] * 255, torch.as_tensor(parts["train"][0], dtype=torch.float32))
    assert b.test.y.tolist() == [9, 0, 3, 3] and b.options["root"] == str(tmp_path)


def test_idx_reader_rejects_bad_files(tmp_path):
    write_idx(tmp_path / "ok", np.arange(12).reshape(3, 4), compress=False)
    assert read_idx(tmp_path / "ok").tolist() == np.arange(12).reshape(3, 4).tolist()
    (tmp_path / "magic").write_bytes(b"\0\0\x0d\x01" + (3).to_bytes(4, "big") + bytes(12))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    for bad, match in (("magic", "not an unsigned-byte IDX"), ("short", r"header says \(3, 4\)")):
        with pytest.raises(SharpnessError, match=match):
            read_idx(tmp_path / bad)


# --------------------------------------------------------------------------- CIFAR format


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as the cPickle that made the Toronto files did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n))
        self.write(obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def dump_py2(obj: dict, path: Path, writer: str = "py2") -> None:
    """Pickle at protocol 2 with bytes keys, arrays via numpy.core.multiarray (as in the Toronto release);
    ``writer="py3"`` is what Python 3 writes at protocol 2 (bytes through ``_codecs.encode``)."""
    buf = io.BytesIO()
    (Py2Pickler(buf, protocol=2) if writer == "py2" else pickle.Pickler(buf, protocol=2)).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def cifar_rows(n: int, offset: int) -> np.ndarray:
    """Rows of 3072 bytes whose red, green and blue planes hold distinct, position-dependent values."""
    planes = np.arange(1024).reshape(1, 1, 1024) % 50
    rows = planes + np.array([0, 60, 120]).reshape(1, 3, 1) + (offset + np.arange(n)).reshape(n, 1, 1)
    return rows.reshape(n, 3072).astype(np.uint8)


@pytest.mark.parametrize("writer", ["py2", "py3"])
def test_cifar10_loader_reads_the_python_pickle_folder(tmp_path, writer):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        dump_py2({b"batch_label": b"training batch", b"labels": [i, i + 1], b"data": cifar_rows(2, 2 * i),
                  b"filenames": [b"a.png", b"b.png"]}, folder / f"data_batch_{i}", writer)
    dump_py2({b"batch_label": b"testing batch", b"labels": [7, 8, 9], b"data": cifar_rows(3, 100),
              b"filenames": [b"c.png"] * 3}, folder / "test_batch", writer)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump_py2({b"num_cases_per_batch": 2, b"label_names": names, b"num_vis": 3072}, folder / "batches.meta", writer)
    for root in (tmp_path, folder):  # the parent folder or the folder itself
        b = load("cifar10", root=root)
        check_bundle(b)
        assert tuple(b.train.x.shape) == (10, 3, 32, 32) and tuple(b.test.x.shape) == (3, 3, 32, 32)
        assert b.train.y.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6] and b.classes[9] == "truck"
        pixels = (b.train.x * 255).round().long()
        # image k of batch i has offset 2 i + k; plane c holds 60 c; pixel (r, q) holds (32 r + q) % 50
        assert pixels[3, 1, 1, 2].item() == 2 * 2 + 1 + 60 + (32 + 2) % 50
        assert pixels[9, 2, 31, 31].item() == 2 * 5 + 1 + 120 + 1023 % 50


def test_cifar100_loader_reads_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for part, n in (("train", 4), ("test", 2)):
        dump_py2({b"data": cifar_rows(n, 0), b"fine_labels": [99 - k for k in range(n)],
                  b"coarse_labels": list(range(n)), b"filenames": [b"x"] * n, b"batch_label": b"b"}, folder / part)
    dump_py2({b"fine_label_names": [f"f{k}".encode() for k in range(100)],
              b"coarse_label_names": [f"c{k}".encode() for k in range(20)]}, folder / "meta")
    fine, coarse = load("cifar100", root=tmp_path), load("cifar100", root=tmp_path, label="coarse")
    assert (fine.n_classes, coarse.n_classes, fine.classes[99], coarse.classes[19]) == (100, 20, "f99", "c19")
    assert fine.train.y.tolist() == [99, 98, 97, 96] and coarse.test.y.tolist() == [0, 1]
    assert torch.equal(fine.train.x, coarse.train.x) and fine.fingerprint != coarse.fingerprint


class Payload:
    """Unpickled by the standard unpickler, this would run code that writes a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def test_cifar_pickles_never_run_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    marker = tmp_path / "marker"
    dump_py2({b"data": cifar_rows(1, 0), b"fine_labels": [0], b"evil": Payload(marker)}, folder / "train")
    (folder / "meta").write_bytes(b"")
    with pytest.raises(SharpnessError, match=r"refusing to unpickle __builtin__\.exec"):
        load("cifar100", root=tmp_path)
    assert not marker.exists()


# --------------------------------------------------------------------------- user data


def test_from_tensors_records_statistics_and_fingerprint():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 3, 4, 4, generator=g) * torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    y = torch.arange(20) % 4
    b = from_tensors("mine", x, y, x[:5], y[:5])
    check_bundle(b)
    assert (b.modality, b.n_classes, b.options, b.std[2]) == ("image", 4, {}, 1.0)  # constant channel: std 1
    assert from_tensors("other name", x, y, x[:5], y[:5]).fingerprint == b.fingerprint
    x2 = x.clone()
    x2[7, 1, 2, 3] += 1e-6
    assert from_tensors("mine", x2, y, x[:5], y[:5]).fingerprint != b.fingerprint
    as_bytes = from_tensors("u8", (x * 255).round().to(torch.uint8).numpy(), y.numpy(), x[:5], y[:5])
    assert as_bytes.train.x.dtype == torch.float32 and float(as_bytes.train.x.max()) <= 1


def test_from_tensors_matches_a_loaded_bundle():
    b = load("digits", n_train=40, n_test=20)
    assert from_tensors("digits", b.train.x, b.train.y, b.test.x, b.test.y).fingerprint == b.fingerprint


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(3, 2), torch.tensor([0, 1]), torch.zeros(1, 2), torch.tensor([0])), "3 inputs but 2 labels"),
        ((torch.zeros(2, 2), torch.tensor([0, 5]), torch.zeros(1, 2), torch.tensor([0]), 3), "n_classes=3"),
        ((torch.zeros(2, 2), torch.tensor([0, -1]), torch.zeros(1, 2), torch.tensor([0])), r"range \[-1"),
        ((torch.zeros(2, 2), torch.tensor([0.0, 1.0]), torch.zeros(1, 2), torch.tensor([0])), "integer"),
    ],
)
def test_from_tensors_rejects_inconsistent_data(args, match):
    with pytest.raises(SharpnessError, match=match):
        from_tensors("bad", *args)


def test_from_torch_dataset_reads_tensors_images_and_texts():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 5, 5, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    ds = torch.utils.data.TensorDataset(x, y)
    assert from_torch_dataset("t", ds, ds).fingerprint == from_tensors("t", x, y, x, y).fingerprint
    rgb = (x.repeat(1, 3, 1, 1) * 255).round().to(torch.uint8)
    images = [(Image.fromarray(img.permute(1, 2, 0).numpy()), int(label)) for img, label in zip(rgb, y)]
    b = from_torch_dataset("pil", images, images[:2])
    assert tuple(b.train.x.shape) == (6, 3, 5, 5) and torch.equal(b.train.x, rgb.float() / 255)
    texts = [("a b", 0), ("c", 1)]
    t = from_torch_dataset("txt", texts, texts)
    assert (t.modality, t.train.x, t.mean) == ("text", ["a b", "c"], None)


def test_registry_entries_describe_themselves():
    assert set(DATASETS) == {"mnist1d", "fashion_mnist", "digits", "cifar10", "cifar100", "bbc_news"}
    assert {info.modality for info in DATASETS.values()} == {"image", "signal", "text"}
