"""`sharpness measure` and `sharpness spec` mirror the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sharpness import Spec, measure, zoo
from sharpness.cli import main

SPECS = ["worst-linf:rho=0.01,m=64,n_examples=128,n_iters=5", "average-l2:rho=0.1,m=64,n_examples=128,n_iters=4"]


def test_measure_command_equals_the_api(tiny_zoo: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = sorted(p for p in tiny_zoo[1].iterdir() if (p / "card.json").exists())[0]
    out = tmp_path / "out.json"
    argv = ["measure", str(folder), "--threads", "1", "--json", str(out)]
    assert main([*argv, *(x for s in SPECS for x in ("--spec", s))]) == 0
    records = json.loads(out.read_text())
    model, card = zoo.load(folder)
    for record, text in zip(records, SPECS, strict=True):
        expected = measure(model, zoo.inputs(card, "train"), Spec.parse(text))
        assert record["value"] == expected.value and record["spec_str"] == str(Spec.parse(text))
        assert record["model"] == card["id"]
    assert str(Spec.parse(SPECS[0])) in capsys.readouterr().out


def test_spec_command_and_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["spec", "worst-linf:rho=2e-3,m=128"]) == 0
    shown = capsys.readouterr().out
    assert "worst-linf-elementwise:rho=0.002" in shown and Spec.parse("worst-linf:rho=0.002").id in shown
    assert main(["spec", "worst-linf:rho=-1"]) == 2
    assert "rho must be > 0, got -1" in capsys.readouterr().err
    assert main(["measure", str(tmp_path), "--spec", "worst-l2:rho=0.1"]) == 2
    assert "no card.json" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_measure_command_runs_in_the_mode_asked(tiny_zoo: tuple[Path, Path], tmp_path: Path, mode: str) -> None:
    folder = sorted(p for p in tiny_zoo[1].iterdir() if (p / "card.json").exists())[0]
    out = tmp_path / "out.json"
    assert main(["measure", str(folder), "--threads", "1", "--json", str(out), "--spec", SPECS[0], "--mode", mode]) == 0
    (record,) = json.loads(out.read_text())
    model, card = zoo.load(folder)
    expected = measure(model, zoo.inputs(card, "train"), Spec.parse(SPECS[0]), mode=mode)
    assert record["mode"] == expected.mode == mode and record["value"] == expected.value


def test_a_bad_mode_is_refused_before_any_work(tiny_zoo: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = sorted(p for p in tiny_zoo[1].iterdir() if (p / "card.json").exists())[0]
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as info:
        main(["measure", str(folder), "--json", str(out), "--spec", SPECS[0], "--mode", "turbo"])
    assert info.value.code == 2 and "invalid choice: 'turbo'" in capsys.readouterr().err
    assert not out.exists()
