"""Zoo models: forward shapes, parameter counts, the registry, the adapters (timm stand-in, real MiniLM)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from sharpness import SharpnessError
from sharpness.zoo import adapters, build, checkpoint
from sharpness.zoo.archs import complete_arch
from sharpness.zoo.models import CNN1D, MLP, DropPath, Normalize, PreActResNet18, SimpleViT, n_params

SHAPES = [
    # name, kwargs, input shape, closed-form parameter count (None: checked elsewhere)
    ("mlp", {"in_shape": [1, 40], "n_classes": 10, "hidden": [32, 16]}, (3, 1, 40), 41 * 32 + 33 * 16 + 17 * 10),
    ("cnn1d", {"in_shape": [1, 40], "n_classes": 10, "width": 8, "depth": 3},
     (3, 1, 40), (1 * 5 + 1) * 8 + 2 * (8 * 5 + 1) * 8 + (8 * 5 + 1) * 10),
    ("cnn", {"in_shape": [1, 28, 28], "n_classes": 10, "width": 4, "hidden": 8},
     (3, 1, 28, 28), 4 * 9 + 8 + 4 * 8 * 9 + 16 + (8 * 7 * 7 + 1) * 8 + 9 * 10),
    ("preact_resnet18", {"in_shape": [1, 28, 28], "n_classes": 7, "width": 4}, (2, 1, 28, 28), None),
    ("simple_vit", {"in_shape": [3, 32, 32], "n_classes": 5, "patch": 8, "dim": 16, "depth": 2, "heads": 2,
                    "mlp_dim": 32, "dropout": 0.1, "drop_path": 0.2}, (2, 3, 32, 32), None),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "count"), SHAPES, ids=[s[0] for s in SHAPES])
def test_forward_shape_and_count(name: str, kwargs: dict, shape: tuple, count: int | None) -> None:
    torch.manual_seed(0)
    model = build({"name": name, "kwargs": kwargs}).eval()
    out = model(torch.rand(shape))
    assert out.shape == (shape[0], kwargs["n_classes"])
    if count is not None:
        assert n_params(model) == count


@pytest.mark.parametrize(("model", "low", "high"), [
    (lambda: PreActResNet18((3, 32, 32), 10, width=64), 11.1e6, 11.25e6),
    (lambda: SimpleViT((3, 32, 32), 10, patch=4, dim=512, depth=6, heads=16, mlp_dim=1024), 12.55e6, 12.7e6),
], ids=["preact_resnet18-w64", "simple_vit-dim512"])
def test_reference_sizes(model, low: float, high: float) -> None:
    assert low <= n_params(model()) <= high


def test_normalize_is_buffers_in_front() -> None:
    arch = complete_arch({"name": "cnn1d", "kwargs": {"width": 4}}, (2, 40), 3, (1.0, -1.0), (2.0, 0.5))
    assert arch["kwargs"] == {"width": 4, "in_shape": [2, 40], "n_classes": 3, "mean": [1.0, -1.0], "std": [2.0, 0.5]}
    model = build(arch)
    assert isinstance(model.normalize, Normalize)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    assert not any(name.startswith("normalize") for name, _ in model.named_parameters())
    x = torch.randn(4, 2, 40)
    expected = model.net((x - torch.tensor([1.0, -1.0]).view(1, 2, 1)) / torch.tensor([2.0, 0.5]).view(1, 2, 1))
    assert torch.allclose(model(x), expected)


@pytest.mark.parametrize(("arch", "needle"), [
    ({"name": "resnet9000", "kwargs": {}}, "resnet9000"),
    ({"name": "mlp", "kwargs": {"in_shape": [4], "n_classes": 2, "depth": 3}}, "depth"),
    ({"kwargs": {}}, "arch must be"),
    ({"name": "mlp", "kwargs": [1]}, "kwargs must be a dict"),
])
def test_bad_arch_is_named(arch: dict, needle: str) -> None:
    with pytest.raises(SharpnessError, match=needle):
        build(arch)


def test_drop_path_and_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    vit = SimpleViT((1, 8, 8), 3, patch=4, dim=8, depth=2, heads=2, mlp_dim=8, dropout=0.5, drop_path=0.5)
    x = torch.rand(6, 1, 8, 8)
    vit.eval()
    assert torch.equal(vit(x), vit(x))
    vit.train()
    assert not torch.equal(vit(x), vit(x))
    # stochastic depth keeps the expectation: E[drop(x)] = x
    drop = DropPath(0.25).train()
    ones = torch.ones(20000, 1)
    assert abs(float(drop(ones).mean()) - 1.0) < 0.03
    assert set(torch.unique(drop(ones)).tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}


def test_cnn1d_and_mlp_take_any_length() -> None:
    assert CNN1D((3, 17), 4, width=2, depth=2)(torch.zeros(2, 3, 17)).shape == (2, 4)
    assert MLP((5,), 2, hidden=())(torch.zeros(1, 5)).shape == (1, 2)


# --------------------------------------------------------------------------------------- timm adapter


class _StandIn(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.head = nn.Linear(2, num_classes)
        self.pretrained_cfg = {"mean": (0.5, 0.25, 0.125), "std": (0.5, 0.5, 0.5), "input_size": (3, 8, 8)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def fake_timm(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A stand-in ``timm`` module: ``create_model(name, pretrained=False, **kwargs)`` as timm spells it."""
    calls: list[dict] = []

    def create_model(model_name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
        calls.append({"model_name": model_name, "pretrained": pretrained, **kwargs})
        if model_name != "tiny_standin.augreg_in1k":
            raise RuntimeError(f"Unknown model ({model_name})")
        return _StandIn(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    return calls


@pytest.mark.parametrize("layout", ["file", "folder", "subfolder", "pth"])
def test_timm_name_config_weights(fake_timm: list[dict], tmp_path, layout: str) -> None:
    name = "tiny_standin.augreg_in1k"
    torch.manual_seed(1)
    source = _StandIn(num_classes=4)
    target = {"file": tmp_path / "w.safetensors", "folder": tmp_path / f"{name}.safetensors",
              "subfolder": tmp_path / name / "model.safetensors", "pth": tmp_path / f"{name}.pth"}[layout]
    target.parent.mkdir(exist_ok=True)
    if layout == "pth":
        torch.save(source.state_dict(), target)
    else:
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(target))
    weights = str(target if layout == "file" else tmp_path)
    model = build({"name": "timm", "kwargs": {"model_name": name, "weights": weights, "n_classes": 4}})
    assert fake_timm[-1] == {"model_name": name, "pretrained": False, "num_classes": 4}
    for key, value in source.state_dict().items():
        assert torch.equal(model.net.state_dict()[key], value)
    assert model.normalize.mean.tolist() == [0.5, 0.25, 0.125]
    # a card-only folder (imported model) rebuilds with its pretrained weights
    card = {"id": "x", "arch": {"name": "timm", "kwargs": {"model_name": name, "weights": weights, "n_classes": 4}}}
    folder = tmp_path / "imported"
    folder.mkdir()
    checkpoint.write_json_atomic(folder / checkpoint.CARD, card)
    loaded, _ = checkpoint.load(folder)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))


def test_timm_errors(fake_timm: list[dict], tmp_path) -> None:
    with pytest.raises(SharpnessError, match="no weights for timm model"):
        build({"name": "timm", "kwargs": {"model_name": "tiny_standin.augreg_in1k", "weights": str(tmp_path)}})
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(2, 3, 3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SharpnessError, match="missing"):
        build({"name": "timm", "kwargs": {"model_name": "tiny_standin.augreg_in1k",
                                          "weights": str(tmp_path / "bad.safetensors")}})


# ----------------------------------------------------------------------------------- MiniLM (real weights)


@pytest.fixture(scope="module")
def minilm() -> nn.Module:
    torch.manual_seed(0)
    return build({"name": "minilm", "kwargs": {"n_classes": 3, "max_length": 24}}).eval()


def test_minilm_forward_and_mean_pooling(minilm: nn.Module) -> None:
    texts = ["The match ended in a draw.", "Shares rose sharply on Monday after the results were published."]
    enc = minilm.encode(texts)
    assert set(enc) == {"input_ids", "attention_mask"} and enc["input_ids"].shape == (2, 24)
    logits = minilm(**enc)
    assert logits.shape == (2, 3)
    # padding does not change the pooled representation
    short = adapters.encode_texts(minilm.path, texts[:1], max_length=12)
    assert torch.allclose(minilm(**short), logits[:1], atol=1e-5)
    # the tokenizer of a card gives the same encoding without building the model
    same = adapters.tokenizer_for({"name": "minilm", "kwargs": {"max_length": 24}})(texts)
    assert torch.equal(same["input_ids"], enc["input_ids"])


def test_minilm_pretrained_weights_are_the_packaged_ones(minilm: nn.Module) -> None:
    from safetensors.torch import load_file

    shipped = load_file(str(adapters.minilm_path() / "model.safetensors"))
    ours = minilm.encoder.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(ours[key], shipped[key])


def test_minilm_fp16_export_reloads_as_fp32(minilm: nn.Module, tmp_path) -> None:
    folder = adapters.export_minilm(tmp_path / "minilm16")
    assert (folder / "model.safetensors").stat().st_size < 50e6
    state = adapters._pretrained_encoder_state(folder)
    key = "encoder.layer.0.attention.self.query.weight"
    assert state[key].dtype == torch.float32
    assert torch.equal(state[key], minilm.encoder.state_dict()[key].half().float())
