"""Checkpoints: bit-identical round trips, no unpickling, atomic cards, stable ids."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpness import SharpnessError
from sharpness.zoo import build, checkpoint, load, model_id, read_weights, save

ARCHS = [
    {"name": "mlp", "kwargs": {"in_shape": [1, 40], "n_classes": 10, "hidden": [16], "mean": [0.1], "std": [0.9]}},
    {"name": "cnn1d", "kwargs": {"in_shape": [1, 40], "n_classes": 10, "width": 4}},
    {"name": "cnn", "kwargs": {"in_shape": [1, 12, 12], "n_classes": 3, "width": 2, "hidden": 4,
                               "mean": [0.5], "std": [0.25]}},
    {"name": "preact_resnet18", "kwargs": {"in_shape": [3, 8, 8], "n_classes": 4, "width": 2,
                                           "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.3]}},
    {"name": "simple_vit", "kwargs": {"in_shape": [1, 8, 8], "n_classes": 3, "patch": 4, "dim": 8, "depth": 2,
                                      "heads": 2, "mlp_dim": 8, "drop_path": 0.1}},
]


def _trained(arch: dict, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    """A model after two SGD steps in train mode (so BatchNorm statistics are not at their init)."""
    torch.manual_seed(0)
    model = build(arch).to(dtype)
    shape = arch["kwargs"]["in_shape"]
    x = torch.rand(8, *shape, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % arch["kwargs"]["n_classes"]).backward()
        opt.step()
    return model.eval(), x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ARCHS, ids=[a["name"] for a in ARCHS])
def test_round_trip_is_bit_identical(tmp_path: Path, arch: dict, dtype: torch.dtype) -> None:
    model, x = _trained(arch, dtype)
    card = {"id": "m", "arch": arch, "hp": {"lr": 0.1}, "metrics": {"test_err": 0.5}}
    save(tmp_path / "m", model, card)
    loaded, back = load(tmp_path / "m")
    assert back == {**card, "dtype": str(dtype).removeprefix("torch.")} and not loaded.training
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
    assert torch.equal(model(x), loaded(x))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x).mean(dim=1))


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tied()
    save(tmp_path / "t", model, {"arch": {"name": "tied"}})
    state = read_weights(tmp_path / "t" / checkpoint.WEIGHTS)
    assert len(state) == 1
    fresh = Tied()
    checkpoint.load_state(fresh, state, "tied")
    assert fresh.out.weight is fresh.embed.weight and torch.equal(fresh.embed.weight, model.embed.weight)


def test_fp16_storage_reloads_as_the_rounded_fp32_model(tmp_path: Path) -> None:
    model, _ = _trained(ARCHS[0])
    save(tmp_path / "h", model, {"arch": ARCHS[0]}, weights_dtype="float16")
    loaded, card = load(tmp_path / "h")
    assert card["weights_dtype"] == "float16"
    assert read_weights(tmp_path / "h" / checkpoint.WEIGHTS)["net.layers.1.weight"].dtype == torch.float16
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[key], value.half().float())
    with pytest.raises(SharpnessError, match="weights_dtype"):
        save(tmp_path / "bad", model, {"arch": ARCHS[0]}, weights_dtype="int8")


class Boom:
    """Unpickling this would run code (it creates a file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.path,))


def test_user_pt_files_load_weights_only(tmp_path: Path) -> None:
    state = {"w": torch.arange(3.0)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ok.pt")
    assert torch.equal(read_weights(tmp_path / "ok.pt")["w"], state["w"])
    marker = tmp_path / "was-executed"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"w": Boom(str(marker))}, f, protocol=2)
    with pytest.raises(SharpnessError, match="weights_only"):
        read_weights(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(SharpnessError, match="does not exist"):
        read_weights(tmp_path / "missing.safetensors")


def test_load_refuses_mismatched_weights_and_missing_cards(tmp_path: Path) -> None:
    model, _ = _trained(ARCHS[0])
    save(tmp_path / "m", model, {"arch": ARCHS[0]})
    other = {"name": "mlp", "kwargs": {**ARCHS[0]["kwargs"], "hidden": [8]}}
    checkpoint.write_json_atomic(tmp_path / "m" / checkpoint.CARD, {"arch": other})
    with pytest.raises(SharpnessError, match="wrong shape"):
        load(tmp_path / "m")
    with pytest.raises(SharpnessError, match=r"card\.json is missing"):
        load(tmp_path / "nothing")


def test_card_writing_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "card.json"
    checkpoint.write_json_atomic(path, {"v": 1})

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_json_atomic(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # no temporary file left behind
    with pytest.raises(TypeError):
        checkpoint.write_json_atomic(tmp_path / "new.json", {"v": object()})
    assert not (tmp_path / "new.json").exists()


SAVE_FOREVER = """
import sys, torch
from sharpness.zoo import build, save
model = build({"name": "mlp", "kwargs": {"in_shape": [1, 40], "n_classes": 10, "hidden": [256, 256]}})
i = 0
print("ready", flush=True)
while True:
    save(f"{sys.argv[1]}/m{i % 3}", model, {"arch": {"name": "mlp", "kwargs": {}}, "i": i})
    i += 1
"""


@pytest.mark.parametrize("delay", [0.05, 0.17, 0.31, 0.52])
def test_a_model_folder_is_complete_whenever_its_writer_is_killed(tmp_path: Path, delay: float) -> None:
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folders = [p for p in tmp_path.iterdir() if checkpoint.visible(p, tmp_path)]
    for folder in folders:  # complete: weights and card, readable
        assert sorted(f.name for f in folder.iterdir()) == ["card.json", "model.safetensors"], folder
        assert len(read_weights(folder / "model.safetensors")) == 6
        assert "i" in json.loads((folder / "card.json").read_text())


def test_a_failed_save_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build({"name": "mlp", "kwargs": {"in_shape": [1, 4], "n_classes": 2, "hidden": [3]}})

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "write_json_atomic", broken)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "m", model, {"arch": {"name": "mlp", "kwargs": {}}})
    assert not (tmp_path / "m").exists()
    assert list((tmp_path / checkpoint.PARTIAL).iterdir()) == []


@pytest.mark.parametrize(("change", "same"), [
    ({}, True), ({"seed": 1}, False), ({"data": "digits"}, False), ({"hp": {"lr": 0.2}}, False),
    ({"hp": {"lr": 0.1, "wd": 0.0}}, False), ({"arch": {"kwargs": {"w": 2}, "name": "mlp"}}, True),
])
def test_model_id_is_a_stable_function_of_its_inputs(change: dict, same: bool) -> None:
    base = {"arch": {"name": "mlp", "kwargs": {"w": 2}}, "hp": {"lr": 0.1}, "seed": 0, "data": "mnist1d"}
    other = {**base, **change}
    a = model_id(base["arch"], base["hp"], base["seed"], base["data"])
    b = model_id(other["arch"], other["hp"], other["seed"], other["data"])
    assert (a == b) is same and a.startswith("mlp-") and len(a) == 14
