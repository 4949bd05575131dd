"""The reproductions: configs that load, a calibration rule that picks what it says, READMEs that match their data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from sharpness.study.config import load_config
from sharpness.zoo.grid import expand
from sharpness.zoo.grid import load_config as load_grid

ROOT = Path(__file__).resolve().parents[1] / "reproductions"
SETTINGS = sorted(p.parent for p in ROOT.glob("*/zoo.yaml"))


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"reproductions_{name}", ROOT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    return _script("tables")


@pytest.fixture(scope="module")
def calibrate() -> ModuleType:
    return _script("calibrate")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda p: p.name)
def test_zoo_has_at_least_24_models_and_study_config_is_valid(setting):
    jobs = expand(load_grid(setting / "zoo.yaml"))
    assert len(jobs) >= 24
    study = setting / "study.yaml"
    if study.exists():
        cfg = load_config(study)
        assert cfg.zoo.path.resolve() == (setting / "zoo.yaml").resolve()
        assert len(cfg.specs) >= 6


@pytest.mark.parametrize("setting", [s for s in SETTINGS if (s / "results.csv").exists()], ids=lambda p: p.name)
def test_readme_tables_equal_those_recomputed_from_results_csv(setting, tables):
    block = tables.tables(pd.read_csv(setting / "results.csv"))
    assert tables.extract_block((setting / "README.md").read_text()) == block


def _rows(definition: str, rho: float, values: list[float], stderr: float, error: float) -> list[dict[str, str]]:
    return [{"model": f"m{i}", "definition": definition, "rho": str(rho), "value": str(v), "stderr": str(stderr),
             "error_increase": str(error), "seconds": "0"} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        # (rho, median increase, s.e., median error increase): the first that clears every bar
        ([(0.1, 0.01, 0.001, 0.0), (0.3, 0.08, 0.004, 0.05), (1.0, 0.9, 0.01, 0.2)], 0.3),
        ([(0.1, 0.06, 0.02, 0.0), (0.3, 0.2, 0.01, 0.1)], 0.3),        # 0.1: only 3 s.e. above zero
        ([(0.1, 0.01, 0.001, 0.0), (0.3, 0.5, 0.01, 0.4)], None),      # 0.3 saturates the error
    ],
)
def test_calibration_rule_picks_the_smallest_radius_that_clears_every_bar(calibrate, grid, expected):
    rows = [r for rho, v, se, err in grid for r in _rows("worst-l2", rho, [v * 0.9, v, v * 1.1], se, err)]
    cfg = {"definitions": {"worst-l2": [rho for rho, *_ in grid]}}
    summary = calibrate.summarise(rows, cfg, min_increase=0.05, min_snr=10, max_error=0.25)
    chosen = [line["rho"] for line in summary["worst-l2"] if line["chosen"]]
    assert chosen == ([] if expected is None else [expected])
    assert calibrate.chosen_specs(summary) == (
        ["# worst-l2: no radius passes"] if expected is None else [f"worst-l2:rho={expected:g}"])


@pytest.mark.parametrize("config", sorted((ROOT / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_setting_configs_load_and_name_a_packaged_zoo(config):
    cfg = load_config(config)
    assert cfg.zoo.kind == "config" and cfg.zoo.path.is_file()
    assert len(load_grid(cfg.zoo.path)) > 0 and len(cfg.specs) >= 24
