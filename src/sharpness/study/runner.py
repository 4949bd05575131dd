"""The study runner: every (model, definition) pair becomes one row of ``study.sqlite``.

A *unit* is one model measured under one :class:`~sharpness.Spec`. Its key is a content
hash, ``sha256(model fingerprint : spec id : data fingerprint)`` (and ``:mode=fast`` for
the fast mode, :func:`~sharpness.study.units.unit_key`), where the model fingerprint is the
SHA-256 of ``model.safetensors`` and the data fingerprint hashes what the evaluation data
depend on (:func:`~sharpness.study.units.data_identity`). So a key names exactly what was
computed: a retrained model with other weights, another definition, other data or another
mode gets a new key, and a key already ``done`` is never computed again.

A run (:func:`run`)

1. reads the config and copies it into the study folder;
2. resolves the zoo: trains it (resumably) with ``sharpness.zoo.grid.train_grid``, lists a
   folder of model folders, or reads a CSV of references built by a factory;
3. writes the plan, then computes the units that have no row yet (and, with
   ``retry_failed``, those that failed), in-process or on Ray, one transaction per row;
4. exports ``results.csv`` and ``results.parquet``.

Killing it at any instant loses at most the units in flight; running it again finishes
the rest. A unit that raises is stored as ``failed`` with its error, and the run goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sharpness.errors import SharpnessError
from sharpness.modes import MODES, Mode
from sharpness.runtime import torch_threads
from sharpness.study.config import StudyConfig, load_config
from sharpness.study.local import execute_local
from sharpness.study.store import CONFIG_COPY, DATABASE, Store, export_tables
from sharpness.study.units import ModelRef, Unit, plan
from sharpness.study.zoo_source import resolve_zoo

Backend = Literal["local", "ray"]


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """Where a study stands after :func:`run`: counts over the units of its plan."""

    folder: Path
    total: int
    done: int
    failed: int
    pending: int
    computed: int

    @property
    def ok(self) -> bool:
        """Whether every unit is done."""
        return self.done == self.total


# ---------------------------------------------------------------------- run
def run(
    config: StudyConfig | str | Path | dict[str, Any],
    out: str | Path | None = None,
    backend: Backend = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    threads: int | None = None,
    mode: Mode | None = None,
) -> RunSummary:
    """Run (or resume) a study.

    Args:
        config: a :class:`StudyConfig`, or a path / YAML text / mapping for :func:`load_config`.
        out: the study folder; default ``runs/<name>`` (see :class:`StudyConfig`), relative
            to the working directory.
        backend: ``"local"`` (in this process) or ``"ray"`` (one task per unit).
        address: Ray cluster address; ``None`` starts a local cluster (unless Ray is
            already initialised in this process, which is then used).
        retry_failed: compute again the units stored as ``failed``.
        progress: show a progress bar with ETA on stderr.
        threads: torch threads for measuring on the CPU, instead of the config's ``eval.threads``.
        mode: ``"exact"`` or ``"fast"``, instead of the config's ``eval.mode`` (part of the units' keys
            when not ``"exact"``: the rows of one mode are not those of the other).

    Returns:
        A :class:`RunSummary`; ``summary.ok`` when every unit is done.
    """
    if backend not in ("local", "ray"):
        raise SharpnessError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    if mode is not None and mode not in MODES:
        raise SharpnessError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if threads is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, threads=threads))
    if mode is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, mode=mode))
    folder = Path(out) if out is not None else Path("runs") / cfg.name
    created = not folder.exists()
    try:
        todo, counts = _run_in(folder, cfg, backend, address, retry_failed, progress)
    except BaseException:
        # A start that failed before producing anything (a missing dataset, a typo in the targets) leaves no
        # half-made study; trained models are work, and a folder that existed before is the user's: both stay.
        if created and not any(folder.rglob("card.json")) and not _has_rows(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    export_tables(folder)
    return RunSummary(folder, counts["total"], counts["done"], counts["failed"], counts["pending"], len(todo))


def _run_in(folder: Path, cfg: StudyConfig, backend: Backend, address: str | None, retry_failed: bool,
            progress: bool) -> tuple[list[Unit], dict[str, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_COPY).write_text(cfg.text)
    with torch_threads(cfg.eval.threads), _ray_session(backend, address), Store(folder / DATABASE) as store:
        refs = resolve_zoo(cfg.zoo, folder, progress, backend, address)
        check_targets(cfg.targets, refs)  # a typo is reported now, not by the report after every measurement
        units = plan(refs, cfg)
        store.set_plan([{"key": u.key, "model": u.ref.id, "spec": str(u.spec), "ref": u.ref.describe()} for u in units])
        statuses = store.statuses()
        todo = [u for u in units if statuses.get(u.key) is None or (retry_failed and statuses[u.key] == "failed")]
        with _progress_bar(len(todo), progress) as bar:
            write = _writer(store, bar)
            if backend == "local":
                execute_local(todo, write)
            else:
                from sharpness.study.ray_backend import execute_ray

                execute_ray(todo, write, cfg.resources, address)
        return todo, store.counts()


def _has_rows(folder: Path) -> bool:
    """Whether the study database holds any finished unit."""
    import sqlite3

    path = folder / DATABASE
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return bool(db.execute("SELECT 1 FROM rows LIMIT 1").fetchone())
    except sqlite3.Error:
        return True  # unreadable: not ours to delete


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="study", unit="unit", disable=not enabled, dynamic_ncols=True)


def _writer(store: Store, bar: Any) -> Callable[[dict[str, Any]], None]:
    failed = 0

    def write(row: dict[str, Any]) -> None:
        nonlocal failed
        store.write(row)
        failed += row["status"] == "failed"
        bar.set_postfix(failed=failed, refresh=False)
        bar.update()

    return write


def check_targets(targets: tuple[str, ...] | None, refs: list[ModelRef]) -> None:
    """Every target names a hyper-parameter or metric of the models' cards (checked when all cards are on disk)."""
    if not targets or any(ref.folder is None for ref in refs):
        return
    from sharpness.stats import GAP

    columns: set[str] = set()
    for ref in refs:
        card = json.loads((Path(str(ref.folder)) / "card.json").read_text())
        columns |= {f"hp.{k}" for k in card.get("hp") or {}}
        columns |= {f"metric.{k}" for k in _flat(card.get("metrics") or {})}
    for name in targets:
        if name in ("ood", GAP) or any(c in columns for c in (name, f"metric.{name}", f"hp.{name}")):
            continue
        raise SharpnessError(f"unknown target {name!r}: the models' cards have {sorted(columns)}, "
                             f"and '{GAP}' and 'ood' are always available")


def _flat(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in tree.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


# ---------------------------------------------------------------- executors
def _ray_session(backend: Backend, address: str | None) -> contextlib.AbstractContextManager[Any]:
    """One Ray connection for the whole run (training the zoo, then measuring), closed if opened here."""
    if backend != "ray":
        return contextlib.nullcontext()
    from sharpness.ray_tasks import session

    return session(address)


