"""Declarative zoo grids: every combination of the axes, trained (or imported) and evaluated, resumable.

A grid config (YAML or a dict)::

    name: mnist1d
    data: {name: mnist1d, options: {n_train: 4000}}   # sharpness.zoo.datasets.load(name, **options)
    shifts: [signal_noise, translate, scale]           # default: the modality's shifts
    severity: 5
    archs:                                             # named architectures, chosen by the `arch` key
      mlp: {name: mlp, kwargs: {hidden: [128, 128]}}
      cnn1d: {name: cnn1d, kwargs: {width: 32}}
    hp: {arch: mlp, lr: 0.05, epochs: 10}              # base hyper-parameters
    axes: {arch: [mlp, cnn1d], lr: [0.01, 0.1]}        # cartesian product over the axes
    seeds: [0, 1]
    ood_sets:                                          # other datasets' test splits as OOD sets (optional)
      hans: {name: hans, options: {}, classes: {non-entailment: [neutral, contradiction]}}
    cpu_threads: 1                                     # intra-op threads on the CPU (default: torch's)
    resources: {num_cpus: 1, num_gpus: 0, max_retries: 3}  # per model with --backend ray
    reduced: {data: {options: {n_train: 500}}}         # deep-merged over the config by --reduced

``hp`` keys that are :class:`~sharpness.zoo.train.TrainConfig` fields drive training; ``arch``
picks from ``archs`` (or ``arch:`` may be one architecture dict); every other key is a keyword
argument of the architecture (``dropout``, ``width``, ...). An axis value that is a dict sets
several keys at once. Each model's card records all of them in ``hp``. String arguments of the
architecture may name hyper-parameters in braces, e.g. ``weights: /ckpt/model_{index}.npz``.

Every model is evaluated on the test split under each shift (``ood.<shift>_err``) and on each
OOD set (``ood.<name>_err``; ``classes`` maps a class of the OOD set to the model's classes
whose probabilities it merges, by default the class of the same name).

``mode: import`` builds each model with its pretrained weights (e.g. timm models by name) and
only evaluates it; ``hp`` then only records what the checkpoints were trained with. Its folder
holds the card alone and :func:`sharpness.zoo.load` rebuilds the model from its weights.

Resumability: a model folder whose ``card.json`` exists is skipped; the card is written last and
atomically, so an interrupted run leaves no folder that looks finished.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.runtime import torch_threads
from sharpness.zoo.checkpoint import CARD, DTYPES, PARTIAL, model_id, write_folder, write_json_atomic
from sharpness.zoo.train import TrainConfig

KEYS = {"name", "description", "cost", "mode", "data", "shifts", "severity", "ood_sets", "archs", "arch", "hp", "axes",
        "seeds", "device", "cpu_threads", "weights_dtype", "reduced", "resources"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def packaged_configs() -> dict[str, Path]:
    """The ready configs shipped in ``sharpness/zoo/configs``: name -> path."""
    folder = resources.files("sharpness.zoo") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``; nested dicts merge, everything else is replaced.

    >>> deep_merge({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2]})
    {'a': {'x': 1, 'y': 3}, 'b': [2]}
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(config: dict[str, Any] | str | os.PathLike[str], reduced: bool = False) -> dict[str, Any]:
    """A grid config from a dict, a YAML file, or the name of a packaged config; ``reduced`` applies ``reduced:``."""
    if isinstance(config, dict):
        cfg = copy.deepcopy(config)
    else:
        import yaml

        path = Path(config)
        if not path.is_file():
            packaged = packaged_configs()
            if str(config) not in packaged:
                raise SharpnessError(f"grid config {str(config)!r} is neither a file nor a packaged config "
                                     f"({', '.join(sorted(packaged))})")
            path = packaged[str(config)]
        cfg = yaml.safe_load(path.read_text())
        if not isinstance(cfg, dict):
            raise SharpnessError(f"{path}: a grid config must be a YAML mapping")
    unknown = sorted(set(cfg) - KEYS)
    if unknown:
        raise SharpnessError(f"unknown grid config key(s) {unknown}; known: {sorted(KEYS)}")
    if reduced:
        cfg = deep_merge(cfg, cfg.get("reduced") or {})
    cfg.pop("reduced", None)
    if not isinstance(cfg.get("data"), dict) or "name" not in cfg["data"]:
        raise SharpnessError("a grid config needs data: {name: ..., options: {...}}")
    if cfg.get("mode", "train") not in ("train", "import"):
        raise SharpnessError(f"mode must be 'train' or 'import', got {cfg.get('mode')!r}")
    if cfg.get("weights_dtype") not in (None, *DTYPES):
        raise SharpnessError(f"weights_dtype must be one of {sorted(DTYPES)}, got {cfg.get('weights_dtype')!r}")
    return cfg


@dataclass(frozen=True)
class Job:
    """One model of a grid: its architecture (before data-derived fields), hyper-parameters and seed."""

    id: str
    arch: dict[str, Any]
    hp: dict[str, Any]
    train: TrainConfig
    seed: int


def _points(axes: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SharpnessError(f"axis {name!r} needs a non-empty list of values, got {values!r}")
    for combo in itertools.product(*axes.values()):
        point: dict[str, Any] = {}
        for name, value in zip(axes, combo):
            point.update(value if isinstance(value, dict) else {name: value})
        yield point


def _arch(cfg: dict[str, Any], choice: Any) -> dict[str, Any]:
    archs = cfg.get("archs") or {}
    if isinstance(choice, str):
        if choice not in archs:
            raise SharpnessError(f"arch {choice!r} is not among the config's archs {sorted(archs)}")
        return copy.deepcopy(archs[choice])
    if isinstance(choice, dict):
        return copy.deepcopy(choice)
    raise SharpnessError(f"arch must be a name from archs or an architecture dict, got {choice!r}")


def _fill(kwargs: dict[str, Any], hp: dict[str, Any]) -> dict[str, Any]:
    """Fill ``{name}`` placeholders in string arguments with the model's hyper-parameters (e.g. a weights path)."""
    try:
        return {k: v.format(**hp) if isinstance(v, str) and "{" in v else v for k, v in kwargs.items()}
    except (KeyError, IndexError, ValueError) as e:
        raise SharpnessError(f"a placeholder in the architecture's arguments {kwargs} names no hyper-parameter: "
                             f"{e}") from e


def _check_arch(arch: dict[str, Any], from_hp: Iterable[str] = ()) -> None:
    """Fail before training when a key is neither a training hyper-parameter nor an argument of the model.

    ``from_hp``: the keys that came from the hyper-parameters (``hp`` or an axis) rather than the architecture.
    """
    import difflib
    import inspect

    from sharpness.zoo.archs import accepts, check_kwargs, registry

    table = registry()
    if not isinstance(arch.get("name"), str) or arch["name"] not in table:
        raise SharpnessError(f"unknown architecture {arch.get('name')!r}; known: {sorted(table)}")
    factory = table[arch["name"]]
    for key in from_hp:
        if not accepts(factory, key):
            takes = [k for k in inspect.signature(factory).parameters if k != "self"]
            close = difflib.get_close_matches(key, [*TRAIN_KEYS, *takes], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise SharpnessError(
                f"hyper-parameter {key!r} is neither a training setting nor an argument of architecture "
                f"{arch['name']!r}{hint} Training settings: {sorted(TRAIN_KEYS)}; {arch['name']!r} takes {takes}")
    check_kwargs(arch["name"], factory, arch["kwargs"])


def expand(cfg: dict[str, Any]) -> list[Job]:
    """Every job of a (loaded) config, in axis order, seeds innermost."""
    base = dict(cfg.get("hp") or {})
    seeds = cfg.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise SharpnessError(f"seeds must be a list of ints, got {seeds!r}")
    importing = cfg.get("mode") == "import"
    jobs = []
    for point in _points(cfg.get("axes") or {}):
        hp = {**base, **point}
        arch = _arch(cfg, hp.get("arch", cfg.get("arch")))
        arch_hp = {} if importing else {k: v for k, v in hp.items() if k not in TRAIN_KEYS and k != "arch"}
        arch["kwargs"] = _fill({**(arch.get("kwargs") or {}), **arch_hp}, hp)
        _check_arch(arch, arch_hp)
        train = TrainConfig() if importing else TrainConfig.from_dict({k: v for k, v in hp.items() if k in TRAIN_KEYS})
        chosen = {"arch": hp["arch"]} if isinstance(hp.get("arch"), str) else {}
        recorded = dict(hp) if importing else {**train.to_dict(), **arch_hp, **chosen}
        hashed = dict(hp) if importing else {**train.non_default(), **arch_hp}
        for seed in seeds:
            jobs.append(Job(model_id(arch, hashed, seed, cfg["data"]["name"]), arch, recorded, train, seed))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise SharpnessError("the grid has duplicate models (an axis repeats a value or only changes a key that "
                             "does not apply)")
    return jobs


def _device(cfg: dict[str, Any], device: str | None) -> torch.device:
    from sharpness.runtime import device_named

    resolved: torch.device = device_named(device or cfg.get("device") or "auto", "device")
    return resolved


def versions() -> dict[str, str]:
    """Library versions recorded in every card."""
    import sharpness

    return {"torch": torch.__version__, "sharpness": sharpness.__version__, "python": platform.python_version()}


def train_grid(config: dict[str, Any] | str | os.PathLike[str], out: str | os.PathLike[str], progress: bool = True,
               reduced: bool = False, device: str | None = None, backend: Backend = "local",
               address: str | None = None, threads: int | None = None) -> list[Path]:
    """Train and evaluate every model of a grid into ``out/<model id>/``; returns the complete folders.

    Folders with a ``card.json`` are skipped, so an interrupted grid resumes where it stopped; every
    folder is written atomically, by this process alone. ``out/grid.json`` records the resolved config;
    a model whose training raises is listed with its error in ``out/failures.json`` and the grid goes on.

    Args:
        backend: ``"local"`` (one model after another in this process) or ``"ray"``: one Ray task per
            model with the config's ``resources`` (``num_cpus``, ``num_gpus``, ``max_retries`` for tasks
            whose worker dies); workers send back the weights and card, so no shared file system is needed.
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); ``None`` uses the Ray instance of
            this process, or starts a local one.
        threads: torch threads while training on the CPU, instead of the config's ``cpu_threads``.
    """
    if backend not in ("local", "ray"):
        raise SharpnessError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    cfg = load_config(config, reduced)
    if threads is not None:
        cfg["cpu_threads"] = threads
    jobs = expand(cfg)
    resources = zoo_resources(cfg)
    root = Path(out)
    if not root.exists():  # the data are the grid's: a missing dataset stops here, before any folder is made
        grid_data(cfg)
    root.mkdir(parents=True, exist_ok=True)
    # Partial folders left by a killed run are never complete models: start them afresh.
    shutil.rmtree(root / PARTIAL, ignore_errors=True)
    write_json_atomic(root / "grid.json", {**cfg, "reduced": reduced, "n_models": len(jobs)})
    todo = [j for j in jobs if not (root / j.id / CARD).is_file()]
    failures = _Failures(root / FAILURES)

    def finished(job: Job, content: tuple[bytes | None, dict[str, Any]] | None, error: str | None) -> None:
        if content is not None:
            write_folder(root / job.id, *content)
        failures.record(job.id, error)

    if todo:  # the data are the grid's, not a model's: a missing dataset stops here, before any training
        grid_data(cfg)
    if todo and backend == "local":
        _train_here(todo, cfg, device, progress, finished)
    elif todo:
        from sharpness.zoo.ray_training import train_on_ray

        train_on_ray(train_model, todo, cfg, device, resources, address, finished, progress)
    return [root / j.id for j in jobs if (root / j.id / CARD).is_file()]


Backend = Literal["local", "ray"]
FAILURES = "failures.json"


class _Failures:
    """``failures.json``: model id -> the error its training raised (cleared when it later succeeds)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, model: str, error: str | None) -> None:
        if error is None and model not in self.errors:
            return
        if error is None:
            del self.errors[model]
        else:
            self.errors[model] = error
            print(f"zoo: training {model} failed: {error}", file=sys.stderr)
        write_json_atomic(self.path, self.errors)


def _train_here(todo: list[Job], cfg: dict[str, Any], device: str | None, progress: bool,
                finished: Callable[[Job, tuple[bytes | None, dict[str, Any]] | None, str | None], None]) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc=f"zoo {cfg.get('name', '')}", disable=not progress)
    for job in bar:
        bar.set_postfix_str(job.id)
        try:
            content = train_model(job, cfg, device, progress)
        except Exception as e:  # the model's own failure; KeyboardInterrupt stops the grid
            finished(job, None, f"{type(e).__name__}: {e}")
            continue
        finished(job, content, None)


def zoo_resources(cfg: dict[str, Any]) -> dict[str, float]:
    """The grid's per-model Ray request: ``resources: {num_cpus: 1, num_gpus: 0, max_retries: 3}``."""
    given = cfg.get("resources") or {}
    if not isinstance(given, dict) or set(given) - {"num_cpus", "num_gpus", "max_retries"}:
        raise SharpnessError(f"resources: expected keys num_cpus, num_gpus, max_retries, got {given!r}")
    out = {"num_cpus": 1.0, "num_gpus": 0.0, "max_retries": 3, **given}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SharpnessError(f"resources.{key} must be a number >= 0, got {value!r}")
    return out


_DATA: dict[str, tuple[Any, dict[str, Any]]] = {}


def grid_data(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The grid's dataset and OOD sets, built once per process (a Ray worker trains several models)."""
    from sharpness.zoo.checkpoint import canonical
    from sharpness.zoo.registry import load_data

    key = canonical({k: cfg.get(k) for k in ("data", "shifts", "severity", "ood_sets")})
    if key not in _DATA:
        _DATA.clear()
        bundle = load_data(cfg["data"]["name"], cfg["data"].get("options"))
        _DATA[key] = (bundle, ood_sets(cfg, bundle))
    return _DATA[key]


def train_model(job: Job, cfg: dict[str, Any], device: str | None = None,
                progress: bool = False) -> tuple[bytes | None, dict[str, Any]]:
    """Train and evaluate one model of a grid in this process: its weights (safetensors bytes; ``None`` for an
    imported model) and its card, with the provenance of this process."""
    from sharpness.zoo.checkpoint import encode

    bundle, ood = grid_data(cfg)
    dev = _device(cfg, device)
    with torch_threads(cfg.get("cpu_threads") if dev.type == "cpu" else None):
        model, card = _run_job(job, cfg, bundle, ood, dev, progress)
    if cfg.get("mode") == "import":
        return None, card
    return encode(model, card, cfg.get("weights_dtype"))


def ood_sets(cfg: dict[str, Any], bundle: Any) -> dict[str, Any]:
    """The config's shifted test sets and external OOD sets, built once for the whole grid."""
    from sharpness.zoo.evaluation import shifted_sets
    from sharpness.zoo.ood import ood_set
    from sharpness.zoo.paper import read_ood
    from sharpness.zoo.registry import load_data

    sets = shifted_sets(bundle, cfg.get("shifts"), int(cfg.get("severity", 5)))
    for key, spec in (cfg.get("ood_sets") or {}).items():
        if not isinstance(spec, dict) or not ("name" in spec or "format" in spec):
            raise SharpnessError(f"ood_sets.{key} needs `name: <dataset>` or `format: <reader>`, got {spec!r}")
        if "format" in spec:
            sets.update(read_ood(key, spec, bundle.classes))
        else:
            other = load_data(spec["name"], spec.get("options"))
            sets[key] = ood_set(other.test.x, other.test.y, other.classes, bundle.classes, spec.get("classes"))
    return sets


def _run_job(job: Job, cfg: dict[str, Any], bundle: Any, ood: dict[str, Any], device: torch.device,
             progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    from sharpness.zoo.archs import build, complete_arch
    from sharpness.zoo.evaluation import as_inputs, evaluate
    from sharpness.zoo.model_inputs import noisy_labels
    from sharpness.zoo.train import train

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    clock = time.perf_counter()
    in_shape = tuple(bundle.train.x.shape[1:]) if isinstance(bundle.train.x, torch.Tensor) else None
    arch = complete_arch(job.arch, in_shape, bundle.n_classes, bundle.mean, bundle.std)
    importing = cfg.get("mode") == "import"
    torch.manual_seed(job.seed)
    model = build(arch).to(device)
    weights_dtype = cfg.get("weights_dtype")
    card: dict[str, Any] = {"id": job.id, "arch": arch, "hp": job.hp, "seed": job.seed, "grid": cfg.get("name"),
                            "data": {"name": bundle.name, "fingerprint": bundle.fingerprint, "options": bundle.options}}
    train_labels = bundle.train.y
    if importing:
        card.update(epochs=0, wall_time=0.0)
    else:
        log = train(model, as_inputs(model, bundle.train.x), bundle.train.y, job.train, bundle.n_classes, job.seed,
                    progress)
        card.update(epochs=log.epochs, wall_time=round(log.wall_time, 3), steps=log.steps,
                    final_train_loss=log.train_loss, diverged=log.diverged)
        train_labels = noisy_labels(bundle.train.y, job.train.label_noise, bundle.n_classes, job.seed)
        if weights_dtype:  # evaluate the weights exactly as they are stored
            with torch.no_grad():
                for t in model.state_dict().values():
                    if t.is_floating_point():
                        t.copy_(t.to(DTYPES[weights_dtype]))
    start = time.perf_counter()
    card["metrics"] = evaluate(model, bundle, train_labels=train_labels, ood=ood)
    card.update(eval_time=round(time.perf_counter() - start, 3), device=str(device), versions=versions())
    card["provenance"] = provenance(started, time.perf_counter() - clock, device)
    return model, card


def provenance(started: str, seconds: float, device: torch.device) -> dict[str, Any]:
    """Where and how a model was made: the process (host, pid), when, how long, with what, deterministically or not.

    Training is deterministic on one machine with one torch build and thread count (seeded; CPU kernels);
    on CUDA only with ``torch.use_deterministic_algorithms(True)``, which is recorded.
    """
    import socket

    import sharpness

    deterministic = device.type == "cpu" or torch.are_deterministic_algorithms_enabled()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": started, "seconds": round(seconds, 3),
            "torch": torch.__version__, "sharpness": sharpness.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "deterministic": deterministic}
