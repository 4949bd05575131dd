"""Zoo grids: expansion, resumability, kill safety, the ready configs end to end at minimal sizes, the CLI."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import sharpness.zoo.train as train_module
from sharpness import SharpnessError, Spec, measure
from sharpness.zoo import cli, grid, inputs, load
from sharpness.zoo.checkpoint import CARD, WEIGHTS
from testkit import needs_fashion_mnist


def tiny_mnist1d(**axes: list) -> dict:
    cfg = grid.load_config("mnist1d", reduced=True)
    cfg["data"]["options"] = {"n_train": 96, "n_test": 48}
    cfg["hp"].update(epochs=1, batch_size=32)
    cfg["axes"] = axes or {"arch": ["mlp", "cnn1d"]}
    return cfg


# ------------------------------------------------------------------------------------------- expansion


def test_expand_is_the_cartesian_product_times_seeds() -> None:
    cfg = {"data": {"name": "mnist1d"}, "archs": {"a": {"name": "mlp", "kwargs": {"hidden": [4]}}},
           "hp": {"arch": "a", "epochs": 2}, "seeds": [0, 1, 2],
           "axes": {"lr": [0.1, 0.2],
                    "reg": [{"dropout": 0.0, "weight_decay": 0.0}, {"dropout": 0.5, "weight_decay": 0.1}]}}
    jobs = grid.expand(grid.load_config(cfg))
    assert len(jobs) == 2 * 2 * 3 and len({j.id for j in jobs}) == 12
    last = jobs[-1]
    assert last.hp["lr"] == 0.2 and last.hp["dropout"] == 0.5 and last.hp["weight_decay"] == 0.1 and last.seed == 2
    assert last.hp["arch"] == "a" and last.hp["epochs"] == 2 and last.train.weight_decay == 0.1
    assert last.arch == {"name": "mlp", "kwargs": {"hidden": [4], "dropout": 0.5}}  # non-training keys go to arch
    # ids do not depend on the order keys were written in
    again = grid.expand(grid.load_config({**cfg, "hp": {"epochs": 2, "arch": "a"}}))
    assert [j.id for j in again] == [j.id for j in jobs]


@pytest.mark.parametrize(("cfg", "needle"), [
    ({"data": {"name": "mnist1d"}, "arch": {"name": "mlp"}, "axes": {"lr": []}}, "axis 'lr'"),
    ({"data": {"name": "mnist1d"}, "arch": {"name": "mlp"}, "hp": {"optimiser": "sgd"}}, "optimiser"),
    ({"data": {"name": "mnist1d"}, "hp": {"arch": "nope"}}, "nope"),
    ({"data": {"name": "mnist1d"}, "arch": {"name": "mlp"}, "axes": {"lr": [0.1, 0.1]}}, "duplicate"),
    ({"data": {"name": "mnist1d"}, "arch": {"name": "mlp"}, "seeds": 3}, "seeds"),
    ({"arch": {"name": "mlp"}}, "data"),
    ({"data": {"name": "mnist1d"}, "grid": {}}, "grid"),
])
def test_bad_configs_are_named(cfg: dict, needle: str) -> None:
    with pytest.raises(SharpnessError, match=needle):
        grid.expand(grid.load_config(cfg))


@pytest.mark.parametrize(("name", "full", "reduced"), [
    ("mnist1d", 32, 8), ("fmnist_resnet", 32, 16), ("fmnist_vit", 16, 8), ("bbc_minilm", 32, 4),
])
def test_ready_configs_expand(name: str, full: int, reduced: int) -> None:
    assert len(grid.expand(grid.load_config(name))) == full
    assert len(grid.expand(grid.load_config(name, reduced=True))) == reduced
    raw = yaml.safe_load(grid.packaged_configs()[name].read_text())
    assert raw["description"] and raw["cost"]


# -------------------------------------------------------------------------------------- resumability


def test_second_run_trains_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_mnist1d()
    folders = grid.train_grid(cfg, tmp_path, progress=False)
    assert len(folders) == 2 and all((f / CARD).is_file() and (f / WEIGHTS).is_file() for f in folders)
    stamps = [(f / CARD).stat().st_mtime_ns for f in folders]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    assert grid.train_grid(cfg, tmp_path, progress=False) == folders
    assert [(f / CARD).stat().st_mtime_ns for f in folders] == stamps
    recorded = json.loads((tmp_path / "grid.json").read_text())
    assert recorded["n_models"] == 2 and recorded["data"]["options"]["n_train"] == 96


def test_interrupted_grid_resumes_with_the_missing_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_mnist1d()
    real = train_module.train
    calls: list[int] = []

    def dies_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training the second model
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "train", dies_second)
    with pytest.raises(KeyboardInterrupt):
        grid.train_grid(cfg, tmp_path, progress=False)
    jobs = grid.expand(grid.load_config(cfg))
    assert (tmp_path / jobs[0].id / CARD).is_file() and not (tmp_path / jobs[1].id / CARD).exists()
    # a folder holding weights but no card (killed before the card) is not finished either
    (tmp_path / jobs[1].id).mkdir()
    (tmp_path / jobs[1].id / WEIGHTS).write_bytes(b"partial")
    calls.clear()
    monkeypatch.setattr(train_module, "train", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    grid.train_grid(cfg, tmp_path, progress=False)
    assert len(calls) == 1 and (tmp_path / jobs[1].id / CARD).is_file()
    load(tmp_path / jobs[1].id)


# ------------------------------------------------------------------------------ the settings, end to end


def _check_zoo(folders: list[Path], shifts: list[str], n: int) -> dict:
    card = json.loads((folders[0] / CARD).read_text())
    for key in ("train_err", "train_loss", "test_err", "test_loss", *(f"ood.{s}_err" for s in shifts)):
        assert 0 <= card["metrics"][key] < math.inf, key
    assert card["data"]["fingerprint"] and card["versions"]["torch"] == torch.__version__
    assert card["epochs"] >= 1 and card["wall_time"] > 0 and card["id"] == folders[0].name
    model, back = load(folders[0])
    x, y = inputs(back, "train", n=n)
    assert len(y) == n
    res = measure(model, (x, y), Spec(case="average", norm="l2", rho=0.01, m=n, n_examples=n, n_iters=2))
    assert math.isfinite(res.value)
    return card


def test_cards_record_their_provenance_and_leftover_partials_are_cleared(tmp_path: Path) -> None:
    import datetime
    import os
    import socket

    import torch

    (tmp_path / ".partial" / "stale.x").mkdir(parents=True)  # as a killed run leaves it
    cfg = tiny_mnist1d(arch=["mlp"])
    [folder] = grid.train_grid(cfg, tmp_path, progress=False)
    prov = json.loads((folder / "card.json").read_text())["provenance"]
    assert prov["pid"] == os.getpid() and prov["host"] == socket.gethostname()
    assert prov["torch"] == torch.__version__ and prov["device"] == "cpu" and prov["deterministic"] is True
    assert 0 < prov["seconds"] < 600
    started = datetime.datetime.fromisoformat(prov["started"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()) < 600
    assert not (tmp_path / ".partial").exists() or list((tmp_path / ".partial").iterdir()) == []


def test_mnist1d_zoo(tmp_path: Path) -> None:
    cfg = tiny_mnist1d(arch=["cnn1d"], augment=["medium"])
    card = _check_zoo(grid.train_grid(cfg, tmp_path, progress=False), cfg["shifts"], 16)
    assert card["hp"]["arch"] == "cnn1d" and card["hp"]["augment"] == "medium"


@needs_fashion_mnist
@pytest.mark.parametrize("name", ["fmnist_resnet", "fmnist_vit"])
def test_fashion_mnist_zoos(tmp_path: Path, name: str) -> None:
    cfg = grid.load_config(name, reduced=True)
    cfg["data"]["options"] = {"n_train": 64, "n_test": 32}
    cfg["hp"].update(epochs=1, batch_size=32)
    cfg["axes"] = ({"reg": [{"sam": "sam", "rho": 0.05, "label_noise": 0.25, "augment": "light"}]}
                   if name == "fmnist_resnet" else {"reg": [{"augment": "strong", "dropout": 0.1, "drop_path": 0.1}]})
    card = _check_zoo(grid.train_grid(cfg, tmp_path, progress=False), cfg["shifts"], 8)
    assert len(cfg["shifts"]) >= 8 and card["arch"]["kwargs"]["in_shape"] == [1, 28, 28]
    _, y = inputs(card, "train")  # the training labels carry the card's label noise, as in training
    _, clean = inputs({**card, "hp": {**card["hp"], "label_noise": 0.0}}, "train")
    assert int((y != clean).sum()) == round(card["hp"]["label_noise"] * 64)


def test_bbc_minilm_zoo(tmp_path: Path) -> None:
    cfg = grid.load_config("bbc_minilm", reduced=True)
    cfg["data"]["options"] = {"n_train": 8, "n_test": 4}
    cfg["arch"]["kwargs"]["max_length"] = 16
    cfg["hp"].update(batch_size=4)
    cfg["axes"] = {"epochs": [1]}
    cfg["weights_dtype"] = "float16"
    folders = grid.train_grid(cfg, tmp_path, progress=False)
    card = _check_zoo(folders, cfg["shifts"], 4)
    x, _ = inputs(card, "test")
    assert set(x) == {"input_ids", "attention_mask"} and x["input_ids"].shape == (4, 16)
    assert (folders[0] / WEIGHTS).stat().st_size < 50e6  # fp16 storage


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_train_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_mnist1d(lr=[0.05, 0.1], arch=["mlp"])))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["zoo", "train", str(config), "--out", str(tmp_path / "zoo"), "--quiet"])
    assert args.func(args) == 0
    args = parser.parse_args(["zoo", "list", str(tmp_path / "zoo")])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2 models in " + str(tmp_path / "zoo")
    assert out[1].split()[:2] == ["id", "lr"] and len(out) == 4 and "0.05" in out[2] + out[3]


# -------------------------------------------------------- the paper's settings, on stand-ins in their formats


@pytest.mark.parametrize(("name", "n"), [
    ("imagenet_vit_augreg", 28), ("clip_vit_b32", 72), ("mnli_bert", 25), ("cifar10_resnet18", 48),
])
def test_paper_configs_expand_and_ask_for_their_files(tmp_path: Path, name: str, n: int) -> None:
    jobs = grid.expand(grid.load_config(name))
    assert len(jobs) == n
    if name == "imagenet_vit_augreg":
        assert jobs[-1].arch["kwargs"]["weights"].endswith("aug_strong2-wd_0.1-do_0.1-sd_0.1.npz")
        assert jobs[-1].hp == {"aug": "strong2", "wd": 0.1, "do": 0.1, "sd": 0.1}
    with pytest.raises(SharpnessError, match=r"not found|no cifar-10-batches-py"):
        grid.train_grid(name, tmp_path, progress=False)


def _jpegs(folder: Path, names: list[str], per_class: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"img_{i}.JPEG", quality=95)


def test_imagenet_import_zoo_with_timm_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wnids = ["n01440764", "n01443537", "n01484850"]
    _jpegs(tmp_path / "imagenet" / "train", wnids, 2, 0)
    _jpegs(tmp_path / "imagenet" / "val", wnids, 3, 1)
    _jpegs(tmp_path / "imagenet-r", wnids[1:], 2, 2)  # a class subset, as ImageNet-R's 200
    _jpegs(tmp_path / "imagenetv2", ["0", "2"], 2, 3)  # class indices, as ImageNet-V2
    from safetensors.torch import save_file

    def create_model(model_name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(4, 3))
        net.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}  # type: ignore[assignment]
        return net

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    for index in (0, 1):
        torch.manual_seed(index)
        save_file(create_model("standin").state_dict(), str(tmp_path / f"w_{index}.safetensors"))
    cfg = grid.load_config("imagenet_vit_augreg")
    cfg["data"]["options"] = {"root": str(tmp_path / "imagenet"), "size": 16, "crop_pct": 1.0}
    cfg["ood_sets"] = {
        "imagenet_r": {"format": "imagefolder", "root": str(tmp_path / "imagenet-r"), "size": 16, "crop_pct": 1.0},
        "imagenet_v2": {"format": "imagefolder", "root": str(tmp_path / "imagenetv2"), "size": 16, "crop_pct": 1.0,
                        "labels": "index"},
    }
    cfg["arch"]["kwargs"].update(model_name="standin", weights=str(tmp_path / "w_{index}.safetensors"))
    cfg["axes"] = {"index": [0, 1]}
    folders = grid.train_grid(cfg, tmp_path / "zoo", progress=False)
    assert [(f / WEIGHTS).exists() for f in folders] == [False, False]  # cards only: the weights stay where they are
    card = json.loads((folders[1] / CARD).read_text())
    model, _ = load(folders[1])
    # ImageNet-R's error by hand: the model's logits restricted to the subset's classes
    from sharpness.zoo.paper import image_folder

    x, y, _ = image_folder(tmp_path / "imagenet-r", size=16, crop_pct=1.0)
    with torch.no_grad():
        logits = model(torch.from_numpy(x).float() / 255)[:, 1:]
    assert card["metrics"]["ood.imagenet_r_err"] == pytest.approx(float((logits.argmax(1) != torch.from_numpy(y))
                                                                       .float().mean()))
    assert set(card["metrics"]) >= {"test_err", "ood.imagenet_v2_err", "ood.imagenet_r_loss"}
    x_test, y_test = inputs(card, "test")
    assert x_test.shape == (9, 3, 16, 16) and y_test.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_cifar10_zoo_with_cifar10c(tmp_path: Path) -> None:
    import pickle

    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    test = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    for i in range(1, 6):
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [i % 3, 1, 2, 0]}
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=4))
    (root / "test_batch").write_bytes(pickle.dumps({"data": test, "labels": [0, 1, 2, 0, 1, 2]}, protocol=4))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=4))
    corrupt = tmp_path / "CIFAR-10-C"
    corrupt.mkdir()
    clean = test.reshape(6, 3, 32, 32).transpose(0, 2, 3, 1)  # CIFAR-10-C stores NHWC
    np.save(corrupt / "fog.npy", np.concatenate([np.zeros((24, 32, 32, 3), np.uint8), clean]))  # severity 5 = clean
    np.save(corrupt / "labels.npy", np.tile([0, 1, 2, 0, 1, 2], 5))
    cfg = grid.load_config("cifar10_resnet18")
    cfg["data"]["options"] = {"root": str(tmp_path)}
    cfg["ood_sets"]["cifar10c"].update(root=str(corrupt), corruptions=["fog"])
    cfg["arch"]["kwargs"]["width"] = 2
    cfg["hp"].update(epochs=1, batch_size=8)
    cfg["axes"], cfg["seeds"] = {}, [0]
    card = _check_zoo(grid.train_grid(cfg, tmp_path / "zoo", progress=False), [], 8)
    m = card["metrics"]
    assert m["ood.cifar10c_fog_err"] == m["test_err"] and m["ood.cifar10c_fog_loss"] == pytest.approx(m["test_loss"])


def test_mnli_import_zoo_with_hans(tmp_path: Path) -> None:
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    from sharpness.zoo.adapters import minilm_path

    model_dir = tmp_path / "bert-mnli" / "seed_0"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=64, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, model_dir / name)
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    pairs = [("A man plays a guitar.", "A person makes music.", "entailment"),
             ("The cat sleeps.", "The dog barks.", "neutral"),
             ("It is raining.", "The sky is perfectly dry.", "contradiction"),
             ("Kids run in the park.", "Children are outside.", "-")]  # no gold label: skipped
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    for file in ("train.tsv", "dev_matched.tsv"):
        rows = [f"{i}\t0\t0\tfiction\t{a}\t{b}\t{g}\t{g}\n" for i, (a, b, g) in enumerate(pairs)]
        (mnli / file).write_text(header + "".join(rows))
    hans = tmp_path / "heuristics_evaluation_set.txt"
    hans.write_text("gold_label\tsentence1_binary_parse\tsentence1\tsentence2\theuristic\n"
                    "entailment\t-\tThe doctor saw the lawyer.\tThe doctor saw someone.\tlexical_overlap\n"
                    "non-entailment\t-\tThe doctor saw the lawyer.\tThe lawyer saw the doctor.\tlexical_overlap\n")
    cfg = grid.load_config("mnli_bert")
    cfg["data"]["options"]["root"] = str(mnli)
    cfg["ood_sets"]["hans"]["path"] = str(hans)
    cfg["arch"]["kwargs"].update(path=str(tmp_path / "bert-mnli" / "seed_{finetune_seed}"), max_length=32)
    cfg["axes"] = {"finetune_seed": [0]}
    folders = grid.train_grid(cfg, tmp_path / "zoo", progress=False)
    card = json.loads((folders[0] / CARD).read_text())
    model, _ = load(folders[0])
    x, y = inputs(card, "test")
    assert len(y) == 3 and y.tolist() == [1, 2, 0]  # classes: contradiction, entailment, neutral
    assert int(x["token_type_ids"][0].max()) == 1  # premise and hypothesis are encoded as a pair
    enc = model.encode(["The doctor saw the lawyer.\tThe doctor saw someone.",
                        "The doctor saw the lawyer.\tThe lawyer saw the doctor."])
    with torch.no_grad():
        p = model(**enc).softmax(dim=1)
    predicted = (p[:, 0] + p[:, 2] > p[:, 1]).long()  # non-entailment = contradiction + neutral
    assert card["metrics"]["ood.hans_err"] == pytest.approx(float((predicted != torch.tensor([0, 1])).float().mean()))


def test_an_axis_typo_is_named_with_the_setting_it_resembles() -> None:
    cfg = tiny_mnist1d(arch=["mlp"], label_smoothin=[0.0, 0.1])
    with pytest.raises(SharpnessError, match=r"'label_smoothin' is neither a training setting .* 'label_smoothing'"):
        grid.expand(grid.load_config(cfg))


def test_a_missing_dataset_makes_no_zoo_folder(tmp_path: Path) -> None:
    cfg = {"data": {"name": "cifar10", "options": {"root": str(tmp_path / "nowhere")}},
           "archs": {"a": {"name": "mlp"}}, "hp": {"arch": "a", "epochs": 1}}
    with pytest.raises(SharpnessError, match="cifar"):
        grid.train_grid(cfg, tmp_path / "zoo", progress=False)
    assert not (tmp_path / "zoo").exists()
