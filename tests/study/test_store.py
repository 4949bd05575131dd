"""The study database: final done rows, replaceable failed rows, plans, and the exported table."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from sharpness import SharpnessError
from sharpness.study import load, status
from sharpness.study.store import HEAD_COLUMNS, Store, export_tables

ROW = {"key": "k", "model": "m", "spec": "worst-l2-elementwise:rho=0.1"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "study.sqlite")
    yield s
    s.close()


@pytest.mark.parametrize(
    ("writes", "changed", "final"),
    [
        ([("done", 1.0)], [True], ("done", 1.0, 1)),
        ([("done", 1.0), ("done", 2.0)], [True, False], ("done", 1.0, 1)),  # done is final
        ([("done", 1.0), ("failed", None)], [True, False], ("done", 1.0, 1)),
        ([("failed", None), ("done", 3.0)], [True, True], ("done", 3.0, 2)),  # a retry replaces a failure
        ([("failed", None), ("failed", None), ("failed", None)], [True, True, True], ("failed", None, 3)),
    ],
)
def test_write_semantics(store: Store, writes: list, changed: list, final: tuple) -> None:
    assert [store.write({**ROW, "status": s, "value": v}) for s, v in writes] == changed
    [row] = store.rows()
    assert (row["status"], row["value"], row["attempts"]) == final


def test_done_row_keeps_its_timestamp(store: Store) -> None:
    store.write({**ROW, "status": "done", "value": 1.0})
    first = store.rows()[0]["finished_at"]
    store.write({**ROW, "status": "done", "value": 1.0})
    assert store.rows()[0]["finished_at"] == first


def test_wal_and_concurrent_reader(store: Store) -> None:
    assert store.journal_mode() == "wal"
    store.write({**ROW, "status": "done", "value": 1.0})
    reader = sqlite3.connect(store.path)
    try:
        assert reader.execute("SELECT key, status FROM rows").fetchall() == [("k", "done")]
    finally:
        reader.close()


def test_bad_row_writes_nothing(store: Store) -> None:
    with pytest.raises(KeyError, match="bogus"):
        store.write({**ROW, "status": "done", "bogus": 1})
    with pytest.raises(sqlite3.IntegrityError):
        store.write({**ROW, "status": "running"})
    assert store.rows() == []


def test_plan_counts(store: Store) -> None:
    units = [{"key": f"k{i}", "model": "m", "spec": f"s{i}", "ref": "{}"} for i in range(4)]
    store.set_plan(units)
    store.write({**ROW, "key": "k1", "status": "done"})
    store.write({**ROW, "key": "k2", "status": "failed", "error": "boom"})
    store.write({**ROW, "key": "old", "status": "done"})  # a row of an earlier plan
    assert store.counts() == {"done": 1, "failed": 1, "pending": 2, "total": 4}
    store.set_plan(units[:2])
    assert store.counts() == {"done": 1, "failed": 0, "pending": 1, "total": 2}
    assert [u["key"] for u in store.plan()] == ["k0", "k1"]


def _card(lr: float, arch: str | float) -> str:
    return json.dumps({
        "id": "x", "seed": 3, "hp": {"lr": lr, "arch": arch, "hidden": [8, 8], "opt": {"momentum": 0.9}},
        "metrics": {"test_err": 0.2, "train_err": 0.1, "ood.gaussian_noise_err": 0.5},
    })


def test_load_table(tmp_path: Path) -> None:
    with Store(tmp_path / "study.sqlite") as s:
        s.set_plan([{"key": k, "model": m, "spec": "worst-l2:rho=1", "ref": "{}"}
                    for k, m in [("b", "m2"), ("a", "m1"), ("p", "m3")]])
        s.write({"key": "a", "model": "m1", "spec": "worst-l2:rho=1", "status": "done", "value": 0.5,
                 "stderr": 0.1, "error_increase": 0.25, "card": _card(0.1, "mlp")})
        s.write({"key": "b", "model": "m2", "spec": "worst-l2:rho=1", "status": "failed", "error": "E: x",
                 "card": _card(0.01, 3.0)})
        s.write({"key": "z", "model": "m9", "spec": "worst-l2:rho=1", "status": "done", "card": _card(1.0, "x")})
    df = load(tmp_path)
    assert list(df.columns[: len(HEAD_COLUMNS)]) == list(HEAD_COLUMNS)
    assert list(df["model"]) == ["m2", "m1"]  # plan order; pending and stale rows left out
    assert list(df["status"]) == ["failed", "done"] and df["error"].tolist()[0] == "E: x"
    assert df[["value", "stderr", "error_increase"]].iloc[1].tolist() == [0.5, 0.1, 0.25]
    assert df["hp.lr"].tolist() == [0.01, 0.1] and df["hp.seed"].tolist() == [3, 3]
    assert df["hp.opt.momentum"].tolist() == [0.9, 0.9] and df["hp.hidden"][0] == "[8, 8]"
    assert df["metric.ood.gaussian_noise_err"].tolist() == [0.5, 0.5]
    csv_path, parquet_path = export_tables(tmp_path)
    back = pd.read_parquet(parquet_path)
    assert back["hp.arch"].tolist() == ["3.0", "mlp"]  # a column mixing types is stored as text
    assert back["value"].isna().tolist() == [True, False]
    assert pd.read_csv(csv_path)["model"].tolist() == ["m2", "m1"]
    counts = status(tmp_path)
    assert (counts["done"], counts["failed"], counts["pending"]) == (1, 1, 1)
    assert counts["failures"] == [{"model": "m2", "spec": "worst-l2:rho=1", "error": "E: x"}]


def test_load_needs_a_study(tmp_path: Path) -> None:
    with pytest.raises(SharpnessError, match="not a study folder"):
        load(tmp_path)
