"""The runner on a real tiny zoo: one row per unit, deterministic, resumable after SIGKILL, failures isolated."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import sharpness
from sharpness import SharpnessError, Spec
from sharpness.cli import main
from sharpness.study import load, run, status
from sharpness.study.units import unit_key

SPECS = ["worst-linf-elementwise:rho=0.01,n_iters=5", "average-l2-standard:rho=0.05,n_iters=4"]


def _config(zoo: str, specs: list[str], name: str = "t") -> str:
    lines = "\n".join(f"  - {s}" for s in specs)
    evaluation = "eval: {n_examples: 128, m: 64, threads: 1}"
    return f"name: {name}\nzoo:\n{textwrap.indent(zoo, '  ')}\n{evaluation}\nspecs:\n{lines}\n"


@pytest.fixture(scope="module")
def study(tiny_zoo: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A finished study of the tiny zoo (a ``config`` zoo whose models already exist)."""
    zoo_config, models = tiny_zoo
    text = _config(f"config: {zoo_config}\nout: {models}", SPECS)
    folder = tmp_path_factory.mktemp("study")
    summary = run(text, out=folder, progress=False)
    assert (summary.total, summary.done, summary.failed, summary.computed, summary.ok) == (6, 6, 0, 6, True)
    return text, folder


def test_table(study: tuple[str, Path], tiny_zoo: tuple[Path, Path]) -> None:
    text, folder = study
    df = load(folder)
    assert list(df.columns[:7]) == ["model", "spec", "value", "stderr", "error_increase", "status", "error"]
    assert len(df) == 6 and set(df["status"]) == {"done"} and df["error"].isna().all()
    assert sorted(set(df["spec"])) == sorted(str(Spec.parse(s).replace(n_examples=128, m=64)) for s in SPECS)
    assert df.groupby(["model", "spec"]).size().eq(1).all()
    assert (df["value"] >= 0).all() and df["stderr"].gt(0).all()  # worst: >= 0 by construction
    assert df["error_increase"].between(-1, 1).all()
    cards = {p.parent.name: json.loads(p.read_text()) for p in tiny_zoo[1].glob("*/card.json")}
    for _, row in df.iterrows():
        card = cards[row["model"]]
        assert row["hp.lr"] == card["hp"]["lr"] and row["hp.seed"] == card["seed"]
        assert row["metric.test_err"] == card["metrics"]["test_err"]
        assert row["metric.ood.signal_noise_err"] == card["metrics"]["ood.signal_noise_err"]
    # the key is the content hash of weights, definition and data; the stored Result matches the columns
    with sqlite3.connect(folder / "study.sqlite") as db:
        query = "SELECT key, model, value, result, model_fingerprint, data_fingerprint FROM rows"
        stored = db.execute(query).fetchall()
    for key, model, value, result, model_fp, data_fp in stored:
        weights = (tiny_zoo[1] / model / "model.safetensors").read_bytes()
        assert model_fp == hashlib.sha256(weights).hexdigest()
        assert key == unit_key(model_fp, Spec.parse(json.loads(result)["spec_str"]), data_fp)
        assert json.loads(result)["value"] == value
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "results.parquet"), df, check_dtype=False)
    assert pd.read_csv(folder / "results.csv")["value"].tolist() == pytest.approx(df["value"].tolist(), rel=1e-12)
    assert (folder / "config.yaml").read_text() == text


def test_rerun_computes_nothing_and_is_deterministic(study: tuple[str, Path], tmp_path: Path) -> None:
    text, folder = study
    before = load(folder)
    stamps = _stamps(folder)
    again = run(text, out=folder, progress=False)
    assert (again.computed, again.done) == (0, 6) and _stamps(folder) == stamps
    fresh = run(text, out=tmp_path / "fresh", progress=False)  # same config, new folder: same values
    assert fresh.computed == 6
    pd.testing.assert_frame_equal(load(tmp_path / "fresh").drop(columns="seconds"), before.drop(columns="seconds"))


def test_cli_status_and_report(study: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = study
    assert main(["study", "status", str(folder)]) == 0
    assert "6/6 done, 0 failed, 0 pending" in capsys.readouterr().out
    assert main(["study", "report", str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert Path(lines[-1]) == folder / "report.html" and Path(lines[-1]).is_file()  # the path comes last
    assert lines[0].startswith("Kendall tau-b") and sum(line.startswith(("worst", "average")) for line in lines) == 2


def _stamps(folder: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(folder / "study.sqlite") as db:
        return {k: (t, a) for k, t, a in db.execute("SELECT key, finished_at, attempts FROM rows")}


FACTORY = '''
import os
import torch

def build(row):
    if row["model"] == "bad" and os.path.exists(os.environ["STUDY_TEST_MARKER"]):
        raise RuntimeError("weights unavailable for " + row["model"])
    torch.manual_seed(int(row["seed"]))
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    card = {"id": row["model"], "hp": {"seed": int(row["seed"]), "width": 8}, "metrics": {"test_err": 0.5}}
    return model, card, (x, x[:, :3].argmax(1))
'''


def test_failures_are_isolated_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "study_test_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "marker"
    marker.touch()
    monkeypatch.setenv("STUDY_TEST_MARKER", str(marker))
    (tmp_path / "refs.csv").write_text("model,seed\ngood,0\nbad,1\nalso_good,2\n")
    specs = ["worst-l2-standard:rho=0.1,n_iters=3", "average-linf-standard:rho=0.1,n_iters=2",
             "worst-l2-standard:rho=0.1,n_examples=256"]  # more examples than the data hold: fails everywhere
    config = tmp_path / "csv-study.yaml"
    config.write_text(_config("csv: refs.csv\nfactory: study_test_factory:build",
                              specs, name="csv").replace("n_examples: 128", "n_examples: 64"))
    out = tmp_path / "s"
    first = run(config, out=out, progress=False)
    assert (first.total, first.done, first.failed, first.ok) == (9, 4, 5, False)
    df = load(out)
    bad_model, bad_spec = df["model"] == "bad", df["spec"] == str(Spec.parse(specs[2]).replace(m=64))
    assert df.loc[bad_model, "error"].str.contains("RuntimeError: weights unavailable for bad").all()
    assert df.loc[bad_spec & ~bad_model, "error"].str.contains("n_examples=256 is larger").all()
    assert df.loc[~bad_model, "hp.width"].eq(8).all() and df.loc[bad_model, "hp.width"].isna().all()
    assert len(status(out)["failures"]) == 5
    assert main(["study", "status", str(out)]) == 1  # not every unit is done
    assert run(config, out=out, progress=False).computed == 0  # failures are not retried unasked
    marker.unlink()
    retried = run(config, out=out, progress=False, retry_failed=True)
    assert (retried.computed, retried.done, retried.failed) == (5, 6, 3)
    assert sorted(a for _, a in _stamps(out).values()) == [1] * 4 + [2] * 5


def test_sigkill_and_resume(tiny_zoo: tuple[Path, Path], tmp_path: Path) -> None:
    """Kill ``sharpness study run`` with SIGKILL mid-way, restart it: one row per unit, finished rows untouched."""
    specs = [f"worst-linf-elementwise:rho={r},n_iters=50" for r in (0.001, 0.002, 0.005, 0.01)]
    config = tmp_path / "kill.yaml"
    config.write_text(_config(f"folder: {tiny_zoo[1]}", specs).replace("n_examples: 128", "n_examples: 256"))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "sharpness.cli", "study", "run", str(config), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(sharpness.__file__).parents[1])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # generous: only a hang should trip it
        while _done_rows(out) < 3:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stamps = _stamps(out)
    assert 3 <= len(stamps) < 12
    with sqlite3.connect(out / "study.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    after = _stamps(out)
    assert len(after) == 12 and all(after[k] == v for k, v in stamps.items())  # nothing lost or recomputed
    assert all(a == 1 for _, a in after.values())
    df = load(out)
    assert len(df) == 12 and df.groupby(["model", "spec"]).size().eq(1).all() and set(df["status"]) == {"done"}
    assert not math.isnan(df["value"].sum())


def _done_rows(folder: Path) -> int:
    path = folder / "study.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0


@pytest.mark.parametrize(("targets", "ok"), [("[test_error]", False), ("[test_err, gap, ood, lr]", True),
                                              ("[metric.train_loss]", True), ("[learning_rate]", False)])
def test_targets_are_checked_before_any_measurement(tiny_zoo: tuple[Path, Path], tmp_path: Path, targets: str,
                                                    ok: bool) -> None:
    config = (f"zoo: {{folder: {tiny_zoo[1]}}}\neval: {{n_examples: 64, m: 64, threads: 1}}\n"
              f"specs:\n  - worst-linf-elementwise:rho=0.01,n_iters=2\ntargets: {targets}\n")
    if ok:
        assert run(config, out=tmp_path / "s", progress=False).ok
        return
    with pytest.raises(SharpnessError, match="unknown target"):
        run(config, out=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()  # a failed start leaves no half-made study


def test_a_missing_dataset_leaves_no_study_folder(tmp_path: Path) -> None:
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("data: {name: cifar10, options: {root: /nonexistent}}\narchs: {a: {name: mlp}}\n"
                         "hp: {arch: a, epochs: 1}\n")
    config = f"zoo: {{config: {grid_file}}}\nspecs:\n  - worst-linf-elementwise:rho=0.01,n_iters=2\n"
    with pytest.raises(SharpnessError, match="cifar"):
        run(config, out=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


READER = """
import sys
from pathlib import Path
from sharpness.errors import SharpnessError
from sharpness.study import load, status
from sharpness.study.report import report
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
print(status(folder)["done"], len(load(folder)))
try:
    report(folder)
except SharpnessError as e:
    print("refused:", e)
path, _ = report(folder, out=out)
print(path.parent == out, path.is_file())
"""


def test_a_read_only_study_can_be_read_and_reported_elsewhere(study: tuple[str, Path], tmp_path: Path) -> None:
    import shutil
    import stat
    import tempfile

    _, folder = study
    archive = Path(tempfile.mkdtemp(prefix="ro-study-"))
    try:
        shutil.copytree(folder, archive / "s")
        out = archive / "report"
        out.mkdir()
        for p in [archive / "s", *(archive / "s").rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        # root writes anywhere: without the capability to override file permissions it is bound by them
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, sys.executable, "-c", READER, str(archive / "s"), str(out)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "MPLCONFIGDIR": str(out)})
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        counts = load(folder)
        assert lines[0] == f"{int((counts['status'] == 'done').sum())} {len(counts)}"
        assert lines[1].startswith("refused:") and "--out" in lines[1]
        assert lines[2] == "True True"
    finally:
        for p in [archive, *archive.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(archive, ignore_errors=True)
