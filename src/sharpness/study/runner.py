"""The study runner: every (model, definition) pair becomes one row of ``study.sqlite``.

A *unit* is one model measured under one :class:`~sharpness.Spec`. Its key is a content
hash, ``sha256(model fingerprint : spec id : data fingerprint)``, where the model
fingerprint is the SHA-256 of ``model.safetensors`` and the data fingerprint hashes what
the evaluation data depend on (:func:`data_identity`). So a key names exactly what was
computed: a retrained model with other weights, another definition or other data gets a
new key, and a key already ``done`` is never computed again.

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
import csv
import dataclasses
import functools
import hashlib
import importlib
import itertools
import json
import os
import shutil
import socket
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.runtime import torch_threads
from sharpness.spec import Spec
from sharpness.study.config import EvalOptions, StudyConfig, ZooSource, load_config
from sharpness.study.store import Store, export_tables

Backend = Literal["local", "ray"]
Data = tuple[Any, torch.Tensor]
DATABASE = "study.sqlite"
CONFIG_COPY = "config.yaml"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """How to rebuild one model: a model folder, or a CSV row handed to a factory.

    Attributes:
        id: the model id (the card's ``id``, or the CSV row's ``model``).
        folder: a model folder (``model.safetensors`` + ``card.json``).
        row: a CSV row (column name -> text).
        factory: ``"pkg.module:function"``; ``function(row)`` returns ``(model, card)`` or
            ``(model, card, (X, Y))``.
    """

    id: str
    folder: str | None = None
    row: tuple[tuple[str, str], ...] | None = None
    factory: str | None = None

    def describe(self) -> str:
        return json.dumps(self.folder or {"factory": self.factory, "row": dict(self.row or ())})


@dataclasses.dataclass(frozen=True)
class Unit:
    """One (model, definition) pair and everything a worker needs to compute its row."""

    key: str
    ref: ModelRef
    spec: Spec
    model_fingerprint: str
    data_fingerprint: str
    eval: EvalOptions


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

    Returns:
        A :class:`RunSummary`; ``summary.ok`` when every unit is done.
    """
    if backend not in ("local", "ray"):
        raise SharpnessError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    if threads is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, threads=threads))
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


def report(folder: str | Path, color_by: str | None = None, out: str | Path | None = None) -> tuple[Path, str]:
    """Write the study's ``report.html`` and figures; returns its path and the τ table as text.

    ``color_by`` and the targets default to the ``report`` and ``targets`` of the config copy; ``out`` (default:
    the study folder) receives the report, so that a read-only study can be reported elsewhere.
    """
    from sharpness.study.report import format_tau_table, write_report
    from sharpness.study.store import load

    folder = Path(folder)
    cfg = load_config(folder / CONFIG_COPY)
    df = load(folder)
    targets = _expand_targets(cfg.targets, df.columns)
    target = Path(out) if out is not None else folder
    if out is None and not os.access(folder, os.W_OK):
        raise SharpnessError(f"the study folder {str(folder)!r} is read-only: write the report elsewhere (--out DIR)")
    target.mkdir(parents=True, exist_ok=True)
    path = write_report(df, target, color_by=color_by or cfg.color_by, targets=targets)
    return path, format_tau_table(df, targets)


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


def _expand_targets(targets: tuple[str, ...] | None, columns: Iterable[str]) -> list[str] | None:
    """``ood`` stands for every OOD error column of the table."""
    if targets is None:
        return None
    ood = [c for c in columns if c.startswith("metric.ood.") and c.endswith("_err")]
    return [name for t in targets for name in (ood if t == "ood" else [t])]


# ---------------------------------------------------------------- executors
def _ray_session(backend: Backend, address: str | None) -> contextlib.AbstractContextManager[Any]:
    """One Ray connection for the whole run (training the zoo, then measuring), closed if opened here."""
    if backend != "ray":
        return contextlib.nullcontext()
    from sharpness.ray_tasks import session

    return session(address)


def execute_local(units: list[Unit], write: Callable[[dict[str, Any]], None]) -> None:
    """Compute ``units`` in this process; each model is loaded once for all its definitions."""
    for _, group in itertools.groupby(units, key=lambda u: u.ref):
        batch = list(group)
        try:
            model, card, data = load_unit_inputs(batch[0])
        except Exception as e:
            for unit in batch:
                write(failed_row(unit, e))
            continue
        for unit in batch:
            write(measure_unit(unit, model, card, data))


def compute_unit(unit: Unit, content: tuple[bytes | None, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Load, measure and describe one unit as a row; never raises for the unit's own errors.

    ``content``: the model folder's weights and card, sent by the driver (no shared file system needed).
    """
    with torch_threads(unit.eval.threads):
        try:
            model, card, data = load_unit_inputs(unit, content)
        except Exception as e:
            return failed_row(unit, e)
        return measure_unit(unit, model, card, data)


def measure_unit(unit: Unit, model: nn.Module, card: dict[str, Any], data: Data) -> dict[str, Any]:
    """``sharpness.measure(model, data, unit.spec)`` as a row (``failed`` if it raises)."""
    from sharpness.measure import measure

    try:
        result = measure(model, data, unit.spec, progress=False)  # the study shows its own bar
    except Exception as e:
        return failed_row(unit, e, card)
    return {
        **_identity(unit),
        "status": "done",
        "value": result.value,
        "stderr": result.stderr,
        "error_increase": result.error_increase,
        "radius": result.radius,
        "clean_loss": result.clean_loss,
        "clean_error": result.clean_error,
        "seconds": result.seconds,
        "n_forward": result.n_forward,
        "n_backward": result.n_backward,
        "result": json.dumps(result.to_dict()),
        "card": json.dumps(card, default=str),
        "host": socket.gethostname(),
    }


def failed_row(unit: Unit, error: BaseException, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of a unit whose loading or measurement raised ``error``."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return {
        **_identity(unit),
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": trace,
        "card": None if card is None else json.dumps(card, default=str),
        "host": socket.gethostname(),
    }


def _identity(unit: Unit) -> dict[str, Any]:
    return {
        "key": unit.key,
        "model": unit.ref.id,
        "spec": str(unit.spec),
        "spec_id": unit.spec.id,
        "model_fingerprint": unit.model_fingerprint,
        "data_fingerprint": unit.data_fingerprint,
    }


# ------------------------------------------------------------ model and data
def load_unit_inputs(unit: Unit, content: tuple[bytes | None, dict[str, Any]] | None = None,
                     ) -> tuple[nn.Module, dict[str, Any], Data]:
    """The unit's model (on the evaluation device), its card and the ``(X, Y)`` it is measured on.

    ``content`` (weights bytes, card) stands in for the unit's model folder when given.
    """
    device = resolve_device(unit.eval.device)
    ref = unit.ref
    if content is not None:
        from sharpness.zoo.checkpoint import decode

        weights, card = content
        model = decode(weights, card)
        data = _inputs(card, unit.eval)
    elif ref.folder is not None:
        from sharpness.zoo import load

        model, card = load(ref.folder)
        data = _inputs(card, unit.eval)
    else:
        model, card, given = _call_factory(ref)
        data = given if given is not None else _inputs(card, unit.eval)
    return model.to(device), card, _to_device(data, device)


_INPUTS: dict[str, Data] = {}


def _inputs(card: dict[str, Any], evaluation: EvalOptions) -> Data:
    """``sharpness.zoo.inputs`` of a card, cached: the definitions of one model share their data."""
    from sharpness.zoo import inputs

    key = json.dumps({**data_identity(card, evaluation), "arch": card.get("arch")}, sort_keys=True, default=str)
    if key not in _INPUTS:
        if len(_INPUTS) >= 2:
            _INPUTS.pop(next(iter(_INPUTS)))
        _INPUTS[key] = inputs(card, evaluation.split, n=evaluation.n)
    return _INPUTS[key]


def data_identity(card: dict[str, Any], evaluation: EvalOptions) -> dict[str, Any]:
    """What ``sharpness.zoo.inputs(card, split, n)`` depends on, besides a text model's tokenizer:
    the dataset (with its fingerprint), the split and size, and for the training split the
    label noise the model was trained with (drawn per seed)."""
    out = {"data": card.get("data"), "split": evaluation.split, "n": evaluation.n}
    if evaluation.split == "train":
        out.update(label_noise=(card.get("hp") or {}).get("label_noise", 0.0), seed=card.get("seed", 0))
    return out


def _call_factory(ref: ModelRef) -> tuple[nn.Module, dict[str, Any], Data | None]:
    built = import_factory(ref.factory or "")(dict(ref.row or ()))
    if not isinstance(built, tuple) or len(built) not in (2, 3):
        raise SharpnessError(f"factory {ref.factory!r} must return (model, card) or (model, card, (X, Y))")
    model, card = built[0], built[1]
    if not isinstance(model, nn.Module) or not isinstance(card, dict):
        raise SharpnessError(
            f"factory {ref.factory!r} returned {type(model).__name__}, {type(card).__name__}; "
            "expected an nn.Module and a card dict"
        )
    return model.eval(), card, built[2] if len(built) == 3 else None


def import_factory(path: str) -> Callable[[dict[str, str]], Any]:
    """The function named by ``"package.module:function"``."""
    module_name, _, name = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise SharpnessError(f"cannot import the model factory {path!r}: {e}") from None
    if not callable(function):
        raise SharpnessError(f"the model factory {path!r} is not callable")
    return function


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is the first GPU when there is one, else the CPU; other names are checked."""
    from sharpness.runtime import device_named

    resolved: torch.device = device_named(device, "eval.device")
    return resolved


def _to_device(data: Data, device: torch.device) -> Data:
    x, y = data
    x = {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)
    return x, y.to(device)


# ----------------------------------------------------------- zoo and plan
def resolve_zoo(source: ZooSource, folder: Path, progress: bool = True, backend: Backend = "local",
                address: str | None = None) -> list[ModelRef]:
    """The models of a study, in a stable order (training them first for a ``config`` zoo, on ``backend``)."""
    if source.kind == "csv":
        return _csv_refs(source)
    if source.kind == "config":
        if not source.path.is_file():
            raise SharpnessError(f"zoo config {str(source.path)!r} (config line {source.line}) does not exist")
        from sharpness.zoo.grid import train_grid

        paths = train_grid(source.path, folder / source.out, progress=progress, reduced=source.reduced,
                           backend=backend, address=address)
    else:
        if not source.path.is_dir():
            raise SharpnessError(f"zoo folder {str(source.path)!r} (config line {source.line}) does not exist")
        from sharpness.zoo.checkpoint import visible

        paths = sorted(p.parent for p in source.path.rglob("card.json") if visible(p, source.path))
    if not paths:
        raise SharpnessError(f"no model folder (with card.json) found for the zoo at {str(source.path)!r}")
    return _unique([ModelRef(_card_id(Path(p)), folder=str(Path(p).resolve())) for p in paths])


def _card_id(folder: Path) -> str:
    card = json.loads((folder / "card.json").read_text())
    return str(card.get("id") or folder.name)


def _csv_refs(source: ZooSource) -> list[ModelRef]:
    if not source.path.is_file():
        raise SharpnessError(f"zoo CSV {str(source.path)!r} (config line {source.line}) does not exist")
    import_factory(source.factory or "")  # fail now, not once per unit
    with source.path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "model" not in rows[0]:
        raise SharpnessError(f"zoo CSV {str(source.path)!r} needs a header with a 'model' column and one row per model")
    return _unique([ModelRef(r["model"], row=tuple(r.items()), factory=source.factory) for r in rows])


def _unique(refs: list[ModelRef]) -> list[ModelRef]:
    seen: dict[str, ModelRef] = {}
    for ref in refs:
        if ref.id in seen:
            raise SharpnessError(
                f"model id {ref.id!r} appears twice in the zoo: {seen[ref.id].describe()} and {ref.describe()}"
            )
        seen[ref.id] = ref
    return refs


def plan(refs: Iterable[ModelRef], cfg: StudyConfig) -> list[Unit]:
    """One unit per (model, definition), model-major, each with its content key."""
    units = []
    for ref in refs:
        model_fp, data_fp = fingerprints(ref, cfg.eval)
        for spec in cfg.specs:
            units.append(Unit(unit_key(model_fp, spec, data_fp), ref, spec, model_fp, data_fp, cfg.eval))
    return units


def unit_key(model_fingerprint: str, spec: Spec, data_fingerprint: str) -> str:
    """The content hash naming one row.

    >>> unit_key("a" * 64, Spec(case="worst", norm="l2", rho=0.1), "b" * 16)
    '...'
    >>> len(unit_key("a", Spec(case="worst", norm="l2", rho=0.1), "b"))
    32
    """
    return hashlib.sha256(f"{model_fingerprint}:{spec.id}:{data_fingerprint}".encode()).hexdigest()[:32]


def fingerprints(ref: ModelRef, evaluation: EvalOptions) -> tuple[str, str]:
    """``(model, data)`` fingerprints.

    A model folder: SHA-256 of its weight file (of ``card.json`` for a folder without
    one), and a hash of :func:`data_identity`. A CSV reference: the hash of
    its row and factory, which therefore must pin the weights (a checkpoint digest or
    revision column) for the key to follow the content.
    """
    if ref.folder is not None:
        folder = Path(ref.folder)
        weights = folder / "model.safetensors"
        model_fp = _file_sha256(weights if weights.is_file() else folder / "card.json")
        data = data_identity(json.loads((folder / "card.json").read_text()), evaluation)
    else:
        model_fp = _sha256_json({"factory": ref.factory, "row": dict(ref.row or ())})
        data = {"reference": model_fp, "split": evaluation.split, "n": evaluation.n}
    return model_fp, _sha256_json(data)[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
