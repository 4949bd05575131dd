"""``study.sqlite``: the rows of a study, safe against a crash at any instant, and its tables.

Two tables. ``units`` is the plan of the latest run: one line per (model, definition),
keyed by its content hash. ``rows`` holds what was computed, one row per key, each
written in a transaction of its own, so a process killed at any point leaves every
finished row intact and no half-written one. The database runs in WAL mode (readers,
such as ``sharpness study status``, never block the writer) with ``synchronous=FULL``.

A ``done`` row is final: writing the same key again changes nothing. A ``failed``
row is replaced when its unit is run again (``--retry-failed``).

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     store = Store(pathlib.Path(d) / "study.sqlite")
...     row = {"key": "k1", "model": "m", "spec": "s"}
...     wrote = [store.write({**row, "status": "failed", "error": "boom"}),
...              store.write({**row, "status": "done", "value": 0.5}),
...              store.write({**row, "status": "done", "value": 9.0})]
...     wrote, [(r["status"], r["value"], r["attempts"]) for r in store.rows()]
([True, True, False], [('done', 0.5, 2)])
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sharpness.errors import SharpnessError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = "1"
# The files of a study folder that the runner writes and the report reads.
DATABASE = "study.sqlite"
CONFIG_COPY = "config.yaml"

# Columns of ``rows`` after ``key``; a row dict may give any subset.
ROW_COLUMNS = (
    "model", "spec", "spec_id", "model_fingerprint", "data_fingerprint", "status",
    "value", "stderr", "error_increase", "radius", "clean_loss", "clean_error", "seconds",
    "n_forward", "n_backward", "result", "card", "error", "traceback", "host", "finished_at",
)  # fmt: skip
UNIT_COLUMNS = ("position", "key", "model", "spec", "ref")

_CREATE = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    position INTEGER NOT NULL, key TEXT PRIMARY KEY, model TEXT NOT NULL, spec TEXT NOT NULL, ref TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL, spec TEXT NOT NULL, spec_id TEXT, model_fingerprint TEXT, data_fingerprint TEXT,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    value REAL, stderr REAL, error_increase REAL, radius REAL, clean_loss REAL, clean_error REAL, seconds REAL,
    n_forward INTEGER, n_backward INTEGER,
    result TEXT, card TEXT, error TEXT, traceback TEXT, host TEXT,
    finished_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1
);
"""


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing, also in a read-only folder or mount (a shared archive).

    ``mode=ro`` still needs the write-ahead log's shared-memory file beside the database; where that cannot
    be made, the file is opened as immutable, which is right for a study no process is writing.
    """
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)


class Store:
    """The study database at ``path`` (created if missing).

    Args:
        path: the ``study.sqlite`` file.
        timeout: seconds to wait for a lock held by another connection.
    """

    def __init__(self, path: Path, timeout: float = 60.0, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self._db = _read_only(self.path)
            self._db.row_factory = sqlite3.Row
            return
        # Autocommit mode: every transaction below is explicit.
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            for statement in _CREATE.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- writing
    def set_plan(self, units: Sequence[dict[str, Any]]) -> None:
        """Replace the plan by ``units`` (dicts with ``key, model, spec, ref``), atomically."""
        with self._transaction():
            self._db.execute("DELETE FROM units")
            self._db.executemany(
                "INSERT INTO units VALUES (?, ?, ?, ?, ?)",
                [(i, u["key"], u["model"], u["spec"], u["ref"]) for i, u in enumerate(units)],
            )

    def write(self, row: dict[str, Any]) -> bool:
        """Store one finished unit in its own transaction; returns whether anything changed.

        A ``done`` row already under the key is kept as it is; a ``failed`` one is replaced
        and its ``attempts`` count goes up.
        """
        unknown = set(row) - {"key", *ROW_COLUMNS}
        if unknown:
            raise KeyError(f"unknown row column(s) {sorted(unknown)}")
        values = {**row, "finished_at": row.get("finished_at") or _now()}
        names = ["key", *(c for c in ROW_COLUMNS if c in values)]
        updates = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
        with self._transaction():
            cursor = self._db.execute(
                f"INSERT INTO rows ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT (key) DO UPDATE SET {updates}, attempts = rows.attempts + 1 "
                "WHERE rows.status = 'failed'",
                [values[c] for c in names],
            )
        return cursor.rowcount > 0

    # -------------------------------------------------------------- reading
    def plan(self) -> list[dict[str, Any]]:
        """The units of the latest run, in order."""
        return [dict(r) for r in self._db.execute("SELECT * FROM units ORDER BY position")]

    def statuses(self) -> dict[str, str]:
        """``key -> 'done' | 'failed'`` for every stored row."""
        return dict(self._db.execute("SELECT key, status FROM rows").fetchall())

    def rows(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Stored rows: all of them, or those of ``keys`` in that order (missing keys skipped)."""
        if keys is None:
            return [dict(r) for r in self._db.execute("SELECT * FROM rows ORDER BY finished_at, key")]
        by_key = {r["key"]: dict(r) for r in self._db.execute("SELECT * FROM rows")}
        return [by_key[k] for k in keys if k in by_key]

    def counts(self) -> dict[str, int]:
        """Units of the plan that are ``done``, ``failed`` and ``pending``, and their ``total``."""
        done, failed, total = self._db.execute(
            "SELECT COALESCE(SUM(r.status = 'done'), 0), COALESCE(SUM(r.status = 'failed'), 0), COUNT(*) "
            "FROM units u LEFT JOIN rows r ON r.key = u.key"
        ).fetchone()
        return {"done": done, "failed": failed, "pending": total - done - failed, "total": total}

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # -------------------------------------------------------------- helpers
    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *exc: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# ------------------------------------------------------------------- tables
HEAD_COLUMNS = ("model", "spec", "value", "stderr", "error_increase", "status", "error")
TAIL_COLUMNS = ("radius", "clean_loss", "clean_error", "seconds", "n_forward", "n_backward", "key")


def load(folder: str | Path) -> pd.DataFrame:
    """The table of a study: one row per (model, definition) of its latest plan.

    Columns: ``model, spec, value, stderr, error_increase, status, error``, then
    ``hp.<name>`` for each training hyper-parameter (and ``hp.seed``) and ``metric.<name>``
    for each metric of the model's card (e.g. ``metric.test_err``,
    ``metric.ood.gaussian_noise_err``), then what the measurement cost
    (``radius, clean_loss, clean_error, seconds, n_forward, n_backward``) and the row's ``key``.
    Units not computed yet have no row; ``status`` is ``done`` or ``failed``.
    """
    import pandas as pd

    path = Path(folder) / DATABASE
    if not path.is_file():
        raise SharpnessError(f"{str(folder)!r} is not a study folder: {path.name} is missing")
    with Store(path, readonly=True) as store:
        plan = store.plan()
        rows = store.rows([u["key"] for u in plan] if plan else None)
    records = [_record(r) for r in rows]
    card_columns = sorted({k for r in records for k in r if k.startswith("hp.")})
    card_columns += sorted({k for r in records for k in r if k.startswith("metric.")})
    return pd.DataFrame(records, columns=[*HEAD_COLUMNS, *card_columns, *TAIL_COLUMNS])


def status(folder: str | Path) -> dict[str, Any]:
    """Counts of the latest plan's units (``done``, ``failed``, ``pending``, ``total``) and
    ``failures``: the model, spec and error of each failed one."""
    path = Path(folder) / DATABASE
    if not path.is_file():
        raise SharpnessError(f"{str(folder)!r} is not a study folder: {path.name} is missing")
    with Store(path, readonly=True) as store:
        plan = store.plan()
        failures = [
            {"model": r["model"], "spec": r["spec"], "error": r["error"]}
            for r in store.rows([u["key"] for u in plan])
            if r["status"] == "failed"
        ]
        return {**store.counts(), "failures": failures}


def export_tables(folder: str | Path) -> tuple[Path, Path]:
    """Write the study table as ``results.csv`` and ``results.parquet``; returns both paths.

    Each file is written beside its final name and renamed, so a reader never sees half of one.
    """
    df = load(folder)
    csv_path, parquet_path = Path(folder) / "results.csv", Path(folder) / "results.parquet"
    for path, write in ((csv_path, lambda p: df.to_csv(p, index=False)),
                        (parquet_path, lambda p: _parquet_safe(df).to_parquet(p, index=False))):
        partial = path.with_name(f".{path.name}.partial")
        write(partial)
        os.replace(partial, path)
    return csv_path, parquet_path


def _record(row: dict[str, Any]) -> dict[str, Any]:
    card = json.loads(row["card"]) if row.get("card") else {}
    out = {k: row.get(k) for k in (*HEAD_COLUMNS, *TAIL_COLUMNS)}
    hp = dict(card.get("hp") or {})
    if "seed" in card:
        hp.setdefault("seed", card["seed"])
    out.update(_flatten(hp, "hp."))
    out.update(_flatten(card.get("metrics") or {}, "metric."))
    return out


def _flatten(mapping: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested mappings become dotted names; lists become their JSON text (one cell each)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing value types (e.g. numbers and text in one hyper-parameter) become text."""
    from pandas.api.types import is_object_dtype

    out = df.copy()
    for column in [c for c in out.columns if is_object_dtype(out[c])]:
        kinds = {type(v) for v in out[column] if v is not None and v == v}
        if len(kinds) > 1:
            out[column] = [None if v is None or v != v else str(v) for v in out[column]]
    return out
