"""``sharpness bench``: floors count the passes a definition needs, the report holds what was timed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sharpness import bench

TINY = ["--model", "cnn", "--width", "4", "--image", "16", "--batches", "2", "--m", "8", "--n-iters", "3",
        "--repeats", "2", "--threads", "1", "--clock", "process"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "cpu.json"
    modes = ["exact", "fast", "fast:precision=tf32,stack=2,draws=3"]
    assert bench.main([*TINY, "--modes", *modes, "--count-ops", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_report_has_one_row_per_case_and_mode(report: dict) -> None:
    (model,) = report["models"]
    assert [(r["case"], r["mode"]) for r in model["rows"]] == [
        (c, m) for c in bench.CASES for m in ("exact", "fast", "fast:precision=tf32,stack=2,draws=3")]
    assert model["n_params"] == sum(p.numel() for p in bench.build_model("cnn", 4, 16).parameters())
    for r in model["rows"]:
        assert r["seconds"] == min(r["times"]) and len(r["times"]) == 2
        assert r["ratio"] == pytest.approx(r["seconds"] / r["floor_s"])
        assert r["floor_s"] == (model["floor_average_s"] if r["case"] == "average-l2" else model["floor_worst_s"])
    assert report["environment"]["torch"] == torch.__version__
    assert report["settings"]["modes"][0] == "exact"


def test_modes_measure_the_same_values(report: dict) -> None:
    rows = {(r["case"], r["mode"]): r for r in report["models"][0]["rows"]}
    for case in bench.CASES:
        exact = rows[case, "exact"]
        # The CPU default keeps the exact arithmetic; the pinned GPU-side mode searches with TF32 products.
        assert rows[case, "fast"]["value"] == pytest.approx(exact["value"], rel=1e-6)
        assert rows[case, "fast:precision=tf32,stack=2,draws=3"]["value"] == pytest.approx(exact["value"], rel=0.02)
        assert "2 m-batches" in rows["worst-linf", "fast:precision=tf32,stack=2,draws=3"]["path"]


def test_search_costs_a_few_operators_beyond_its_pass(report: dict) -> None:
    ops = report["models"][0]["ops_per_iteration"]
    # On the CPU the point is written and the gradient gathered one parameter at a time (one operator each);
    # everything else is a few operators on the flat vector, fewer than the pass itself launches.
    per_parameter = 2 * len(list(bench.build_model("cnn", 4, 16).parameters()))
    assert 0 < ops["beyond_pass"] - per_parameter < ops["fwd_bwd"]


class Counted(nn.Module):
    """Counts forward calls and backward passes of a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.forwards = self.backwards = 0
        self.lin.weight.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        self.backwards += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.lin(x)


@pytest.mark.parametrize(("case", "n_batches", "n_iters", "forwards", "backwards"), [
    ("worst", 2, 5, 2 * (5 + 2), 2 * 5),  # clean + n_iters fwd+bwd + last iterate, per m-batch
    ("worst", 1, 1, 3, 1),
    ("average", 3, 4, 3 * (4 + 1), 0),    # clean + one per draw, per m-batch
])
def test_floors_run_exactly_the_passes_a_definition_needs(case: str, n_batches: int, n_iters: int, forwards: int,
                                                          backwards: int) -> None:
    model = Counted()
    batches = [(torch.randn(6, 4), torch.randint(0, 3, (6,))) for _ in range(n_batches)]
    getattr(bench.Floors(model, batches), case)(n_iters)
    assert (model.forwards, model.backwards) == (forwards, backwards)


@pytest.mark.parametrize(("name", "width", "millions"), [("resnet18", 64, 11.2), ("vit", 512, 12.6)])
def test_the_benchmark_models_have_their_sizes(name: str, width: int, millions: float) -> None:
    with torch.device("meta"):
        model = bench.build_model(name, width, 32)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


@pytest.mark.parametrize(("text", "expected"), [
    ("exact", ("exact", {})),
    ("fast", ("fast", {})),
    ("fast:stack=8,draws=4,precision=bf16", ("fast:stack=8,draws=4,precision=bf16",
                                             {"stack": 8, "draws": 4, "precision": "bf16"})),
])
def test_parse_mode(text: str, expected: tuple) -> None:
    assert bench.parse_mode(text) == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["--modes", "fast:stacks=2"], "unknown fast option 'stacks'"),
    (["--modes", "exact:stack=2"], "mode must be"),
    (["--modes", "fast:precision=fp8"], "precision"),
    (["--batches", "0"], "--batches must be at least 1"),
    (["--model", "vit", "--width", "40"], "multiple of 16"),
])
def test_bad_arguments_fail_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert bench.main([*TINY, *argv, "--repeats", "1"]) == 2
    assert message in capsys.readouterr().err


def test_registers_the_bench_command(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["bench", *TINY, "--cases", "average-l2", "--modes", "exact", "--repeats", "1",
                              "--json", str(tmp_path / "r.json")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "r.json").read_text())["models"][0]["rows"][0]["case"] == "average-l2"
