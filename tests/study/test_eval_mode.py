"""``eval.mode``: a study runs ``measure(..., mode=...)``; the default mode leaves every unit key as it was."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from sharpness import Spec
from sharpness.cli import main
from sharpness.study import load_config, run
from sharpness.study.units import plan, unit_key
from sharpness.study.zoo_source import resolve_zoo

SPEC = "worst-linf-elementwise:rho=0.01,n_iters=4"


def _config(models: Path, mode: str | None) -> str:
    extra = "" if mode is None else f", mode: {mode}"
    return f"zoo: {{folder: {models}}}\neval: {{n_examples: 128, m: 64, threads: 1{extra}}}\nspecs:\n  - {SPEC}\n"


def _keys(models: Path, mode: str | None, tmp_path: Path) -> list[str]:
    cfg = load_config(_config(models, mode))
    return [u.key for u in plan(resolve_zoo(cfg.zoo, tmp_path, progress=False), cfg)]


def _stored_modes(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "study.sqlite") as db:
        return {key: json.loads(result)["mode"] for key, result in db.execute("SELECT key, result FROM rows")}


def test_the_default_mode_keeps_the_keys_studies_were_written_with(tiny_zoo: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    cfg = load_config(_config(tiny_zoo[1], None))
    units = plan(resolve_zoo(cfg.zoo, tmp_path, progress=False), cfg)
    assert cfg.eval.mode == "exact" and len(units) == 3
    for u in units:  # the key as it was computed before modes existed
        before = hashlib.sha256(f"{u.model_fingerprint}:{u.spec.id}:{u.data_fingerprint}".encode()).hexdigest()[:32]
        assert u.key == before == unit_key(u.model_fingerprint, u.spec, u.data_fingerprint, "exact")
    assert _keys(tiny_zoo[1], "exact", tmp_path) == [u.key for u in units]


def test_the_fast_mode_has_keys_of_its_own(tiny_zoo: tuple[Path, Path], tmp_path: Path) -> None:
    exact, fast = _keys(tiny_zoo[1], None, tmp_path), _keys(tiny_zoo[1], "fast", tmp_path)
    assert len(set(fast)) == 3 and not set(fast) & set(exact)
    spec = Spec.parse(SPEC)
    assert unit_key("m", spec, "d", "fast") == hashlib.sha256(f"m:{spec.id}:d:mode=fast".encode()).hexdigest()[:32]


def test_a_fast_study_stores_fast_rows_beside_the_exact_ones(tiny_zoo: tuple[Path, Path], tmp_path: Path) -> None:
    config, folder = tmp_path / "study.yaml", tmp_path / "s"
    config.write_text(_config(tiny_zoo[1], None))
    exact = run(config, out=folder, progress=False)
    assert (exact.computed, exact.ok) == (3, True) and set(_stored_modes(folder).values()) == {"exact"}
    # the command line overrides eval.mode as measure(..., mode=...) would
    assert main(["study", "run", str(config), "--out", str(folder), "--mode", "fast", "--no-progress"]) == 0
    modes = _stored_modes(folder)
    assert sorted(modes.values()) == ["exact"] * 3 + ["fast"] * 3
    assert {k for k, m in modes.items() if m == "fast"} == set(_keys(tiny_zoo[1], "fast", tmp_path))
    # the exact rows are still there: going back to the config's mode computes nothing
    assert run(config, out=folder, progress=False).computed == 0


def test_a_fast_config_gives_fast_rows(tiny_zoo: tuple[Path, Path], tmp_path: Path) -> None:
    summary = run(_config(tiny_zoo[1], "fast"), out=tmp_path / "s", progress=False)
    assert (summary.computed, summary.ok) == (3, True)
    assert set(_stored_modes(tmp_path / "s").values()) == {"fast"}


def test_a_bad_mode_is_refused_before_any_work(tiny_zoo: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(_config(tiny_zoo[1], None))
    with pytest.raises(SystemExit) as info:
        main(["study", "run", str(config), "--out", str(tmp_path / "s"), "--mode", "turbo"])
    assert info.value.code == 2 and "invalid choice: 'turbo'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
