"""Study configuration: a YAML file read into a validated :class:`StudyConfig`.

A study measures every model of a zoo under every definition. Its config names
the zoo, the evaluation data, the definitions and the targets::

    name: demo
    zoo:
      config: mnist1d            # a zoo config (packaged name or path) trained with zoo.grid.train_grid;
      # out: zoo                 #   models go to <study>/zoo unless `out` says otherwise;
      # reduced: false           #   true applies the zoo config's `reduced:` section
      # folder: ../zoos/mnist1d  # or: an existing folder of model folders (model.safetensors + card.json)
      # csv: models.csv          # or: a CSV of model references (column `model` = id) ...
      # factory: mypkg.zoo:build #   ... and the function that builds each one from its row
    eval:
      split: train               # the split the sharpness is measured on
      n: null                    # examples loaded from it (null: all)
      device: auto               # auto | cpu | cuda | cuda:1 ...
      threads: null              # torch threads (null: torch's default)
      mode: exact                # exact | fast: how measure() executes (sharpness.measure's mode=)
      n_examples: 1024           # any Spec field: a default for every definition below
      m: 128
    specs:
      - worst-linf-elementwise:rho=0.002
      - worst-l2:rho=[0.05,0.1]              # a grid: one definition per value
      - spec: average-l2-standard            # the same as a mapping; every list is a grid axis
        rho: [0.001, 0.002]
        n_iters: [10, 20]
    targets: [test_err, gap, ood, lr]     # what sharpness is correlated with (default: test and OOD
                                          # errors, the gap and every varying hyper-parameter)
    resources: {num_cpus: 1, num_gpus: 0, max_retries: 3}   # per unit, for the Ray backend
    report: {color_by: lr}                # hyper-parameter colouring the scatter plots

Targets name columns of the study table in full (``metric.test_err``, ``hp.lr``) or
short (``test_err``, ``lr``); ``gap`` is test minus train error and ``ood`` stands for
every ``metric.ood.<shift>_err``.

Grids expand to the Cartesian product of their axes, in the order written. A
value a definition sets itself wins over the ``eval`` default. Errors name the
file, the line and the key::

    >>> load_config("specs: [worst-linf:rho=0]\\nzoo: {folder: z}", source="study.yaml")
    Traceback (most recent call last):
    ...
    sharpness.errors.SharpnessError: study.yaml, line 1, specs[0]: rho must be > 0, got 0.0
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from sharpness.errors import SharpnessError
from sharpness.modes import DEFAULT_MODE, MODES, Mode
from sharpness.spec import Spec

ZooKind = Literal["config", "folder", "csv"]
Split = Literal["train", "test"]
KeyPath = tuple[str | int, ...]

# Spec fields a definition may vary or ``eval`` may default; the head names the rest.
_HEAD_FIELDS = ("case", "norm", "scaling")
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(Spec) if f.name not in _HEAD_FIELDS)
# Keys of ``eval`` that are not Spec fields.
_EVAL_KEYS = ("split", "n", "device", "threads", "mode")


@dataclasses.dataclass(frozen=True)
class ZooSource:
    """Where the models come from.

    Attributes:
        kind: ``config`` (train with :func:`sharpness.zoo.grid.train_grid`), ``folder`` or ``csv``.
        path: the zoo config, the folder of model folders, or the CSV file.
        out: ``config`` only: where trained models go, relative to the study folder.
        reduced: ``config`` only: apply the zoo config's ``reduced:`` section (a smaller zoo).
        factory: ``csv`` only: ``"pkg.module:function"`` building ``(model, card)`` from a row.
        line: where the zoo section starts in the config (for errors found later).
    """

    kind: ZooKind
    path: Path
    out: str = "zoo"
    factory: str | None = None
    line: int = 0
    reduced: bool = False


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """The data a definition is measured on: ``sharpness.zoo.inputs(card, split, n)``, on ``device``.

    ``threads``: torch's intra-op threads while the zoo trains and the units run (``None``:
    torch's default). One thread is the fastest for small models on a busy machine, where a
    team of OpenMP threads waits on each other at every small operation.

    ``mode``: how each unit's ``sharpness.measure(..., mode=mode)`` executes (``exact`` or ``fast``).
    """

    split: Split = "train"
    n: int | None = None
    device: str = "auto"
    threads: int | None = None
    mode: Mode = DEFAULT_MODE


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one unit asks of a Ray cluster, and how often a task whose worker died is retried."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A validated study config; ``text`` is the YAML it was read from (copied into the study).

    ``name`` names the default study folder ``runs/<name>``: the config's ``name``, else
    the config file's stem, else ``"study"``.
    """

    zoo: ZooSource
    specs: tuple[Spec, ...]
    eval: EvalOptions = EvalOptions()
    targets: tuple[str, ...] | None = None
    resources: Resources = Resources()
    color_by: str | None = None
    name: str = "study"
    text: str = ""


# ------------------------------------------------------------------ loading
def load_config(config: str | Path | dict[str, Any], source: str | None = None) -> StudyConfig:
    """Read and validate a study config.

    Args:
        config: a path to a YAML file, YAML text, or an already parsed mapping.
        source: the name used in error messages (default: the path, or ``"<config>"``).
            Relative paths in the config are relative to the file's folder
            (the working directory for text and mappings).

    Raises:
        SharpnessError: naming the file, line and key of the first problem found.
    """
    base, stem = Path.cwd(), "study"
    if isinstance(config, dict):
        text = yaml.safe_dump(config, sort_keys=False)
    elif isinstance(config, Path) or (isinstance(config, str) and _looks_like_path(config)):
        path = Path(config)
        if not path.is_file():
            raise SharpnessError(f"study config {str(path)!r} does not exist")
        text, base, stem, source = path.read_text(), path.resolve().parent, path.stem, source or str(path)
    elif isinstance(config, str):
        text = config
    else:
        raise SharpnessError(f"a study config must be a path, YAML text or a dict, got {type(config).__name__}")
    doc = _Doc.parse(text, source or "<config>")
    return _build(doc, base, text, stem)


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and (text.endswith((".yaml", ".yml")) or Path(text).is_file())


class _Doc:
    """Parsed YAML plus the line of every key and list item, for errors that point at the file."""

    def __init__(self, data: Any, lines: dict[KeyPath, int], source: str) -> None:
        self.data, self.lines, self.source = data, lines, source

    @classmethod
    def parse(cls, text: str, source: str) -> _Doc:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            raise SharpnessError(f"{source}: not valid YAML: {e}") from None
        lines: dict[KeyPath, int] = {}
        data = _construct(node, (), lines, source) if node is not None else {}
        return cls(data, lines, source)

    def error(self, path: KeyPath, message: str) -> SharpnessError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        return SharpnessError(f"{self.source}, line {line}, {_dotted(path) or 'top level'}: {message}")

    def mapping(self, path: KeyPath, allowed: tuple[str, ...]) -> dict[str, Any]:
        value = self.get(path) or {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {value!r}")
        for key in value:
            if key not in allowed:
                raise self.error((*path, key), f"unknown key {key!r}; expected one of {list(allowed)}")
        return value

    def get(self, path: KeyPath) -> Any:
        """The value at ``path``, or ``None`` where there is none."""
        value = self.data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value


def _construct(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader("").construct_object(key_node)
            if not isinstance(key, str):
                raise SharpnessError(f"{source}, line {key_node.start_mark.line + 1}: keys must be text, got {key!r}")
            if key in out:
                raise SharpnessError(f"{source}, line {key_node.start_mark.line + 1}: key {key!r} given twice")
            out[key] = _construct(value_node, (*path, key), lines, source)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, source) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --------------------------------------------------------------- validation
def _build(doc: _Doc, base: Path, text: str, stem: str) -> StudyConfig:
    top = doc.mapping((), ("name", "zoo", "eval", "specs", "targets", "resources", "report"))
    for required in ("zoo", "specs"):
        if required not in top:
            raise doc.error((), f"the config needs a {required!r} section")
    evaluation, defaults = _eval(doc)
    name = top.get("name", stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise doc.error(("name",), f"expected a folder name, got {name!r}")
    return StudyConfig(
        zoo=_zoo(doc, base),
        specs=_specs(doc, defaults),
        eval=evaluation,
        targets=_targets(doc),
        resources=_resources(doc),
        color_by=_color_by(doc),
        name=name,
        text=text,
    )


def _zoo(doc: _Doc, base: Path) -> ZooSource:
    zoo = dict(doc.mapping(("zoo",), ("config", "out", "reduced", "folder", "csv", "factory")))
    kinds = [k for k in get_args(ZooKind) if k in zoo]
    if len(kinds) != 1:
        raise doc.error(("zoo",), f"give exactly one of 'config', 'folder' or 'csv', got {kinds or 'none'}")
    kind = kinds[0]
    reduced = zoo.pop("reduced", False)
    if not isinstance(reduced, bool) or (reduced and kind != "config"):
        raise doc.error(("zoo", "reduced"), f"expected true or false, with 'config' only, got {reduced!r}")
    for key, value in zoo.items():
        if not isinstance(value, str) or not value:
            raise doc.error(("zoo", key), f"expected a non-empty string, got {value!r}")
    if ("factory" in zoo) != (kind == "csv"):
        raise doc.error(("zoo",), "'factory' goes with 'csv' and only with it")
    if "out" in zoo and kind != "config":
        raise doc.error(("zoo", "out"), "'out' goes with 'config' (a zoo to train) only")
    factory = zoo.get("factory")
    if factory is not None and (factory.count(":") != 1 or not all(factory.split(":"))):
        raise doc.error(("zoo", "factory"), f"expected 'package.module:function', got {factory!r}")
    raw = zoo[kind]
    path = _zoo_config_path(raw, base) if kind == "config" else base / raw
    return ZooSource(kind, path, zoo.get("out", "zoo"), factory, doc.lines[("zoo",)], reduced)


def _zoo_config_path(raw: str, base: Path) -> Path:
    """A path relative to the config, else a packaged zoo config by name (``mnist1d``)."""
    local = base / raw
    if local.exists() or raw.endswith((".yaml", ".yml")) or "/" in raw:
        return local
    return Path(__file__).resolve().parents[1] / "zoo" / "configs" / f"{raw}.yaml"


def _eval(doc: _Doc) -> tuple[EvalOptions, dict[str, Any]]:
    section = doc.mapping(("eval",), (*_EVAL_KEYS, *(f for f in _SPEC_FIELDS if f != "rho")))
    split = section.get("split", "train")
    if split not in get_args(Split):
        raise doc.error(("eval", "split"), f"expected one of {list(get_args(Split))}, got {split!r}")
    for key in ("n", "threads"):
        value = section.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise doc.error(("eval", key), f"expected a positive integer or null, got {value!r}")
    device = section.get("device", "auto")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "mps") or device.startswith("cuda")):
        raise doc.error(("eval", "device"), f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    mode = section.get("mode", DEFAULT_MODE)
    if mode not in MODES:
        raise doc.error(("eval", "mode"), f"expected one of {list(MODES)}, got {mode!r}")
    defaults = {k: v for k, v in section.items() if k not in _EVAL_KEYS}
    try:
        Spec(case="worst", norm="l2", rho=1.0, **defaults)
    except SharpnessError as e:
        named = [k for k in defaults if str(e).startswith(f"{k} ")]  # Spec's messages start with the field
        raise doc.error(("eval", *named[:1]), str(e)) from None
    return EvalOptions(split, section.get("n"), device, section.get("threads"), mode), defaults


def _targets(doc: _Doc) -> tuple[str, ...] | None:
    targets = doc.get(("targets",))
    if targets is None:
        return None
    if not isinstance(targets, list) or not targets:
        raise doc.error(("targets",), f"expected a non-empty list of column names, got {targets!r}")
    for i, t in enumerate(targets):
        if not isinstance(t, str) or not t.strip():
            raise doc.error(("targets", i), f"expected a column name (test_err, gap, ood, lr, ...), got {t!r}")
    return tuple(targets)


def _resources(doc: _Doc) -> Resources:
    section = doc.mapping(("resources",), ("num_cpus", "num_gpus", "max_retries"))
    for key in ("num_cpus", "num_gpus"):
        value = section.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise doc.error(("resources", key), f"expected a number >= 0, got {value!r}")
    retries = section.get("max_retries", Resources.max_retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise doc.error(("resources", "max_retries"), f"expected an integer >= 0, got {retries!r}")
    return Resources(float(section.get("num_cpus", 1)), float(section.get("num_gpus", 0)), retries)


def _color_by(doc: _Doc) -> str | None:
    color = doc.mapping(("report",), ("color_by",)).get("color_by")
    if color is not None and not isinstance(color, str):
        raise doc.error(("report", "color_by"), f"expected a hyper-parameter name, got {color!r}")
    return color


# -------------------------------------------------------------------- specs
def _specs(doc: _Doc, defaults: dict[str, Any]) -> tuple[Spec, ...]:
    items = doc.get(("specs",))
    if not isinstance(items, list) or not items:
        raise doc.error(("specs",), f"expected a non-empty list of definitions, got {items!r}")
    seen: dict[Spec, int] = {}
    for i, item in enumerate(items):
        try:
            for spec in expand_spec(item, defaults):
                if spec in seen:
                    raise SharpnessError(f"definition {str(spec)!r} already given by specs[{seen[spec]}]")
                seen[spec] = i
        except SharpnessError as e:
            raise doc.error(("specs", i), str(e)) from None
    return tuple(seen)


def expand_spec(item: str | dict[str, Any], defaults: dict[str, Any] | None = None) -> list[Spec]:
    """The definitions one ``specs`` entry stands for: a grid over every listed value.

    Args:
        item: a spec string whose values may be lists (``worst-l2:rho=[0.05,0.1]``), or a
            mapping ``{spec: "worst-l2", rho: [0.05, 0.1], ...}`` whose list values are grid axes.
        defaults: Spec fields that apply where the entry does not set them.

    >>> [str(s) for s in expand_spec("worst-l2:rho=[0.1,0.2],m=[64]", {"n_examples": 128})]
    ['worst-l2-elementwise:rho=0.1,m=64,n_examples=128', 'worst-l2-elementwise:rho=0.2,m=64,n_examples=128']
    >>> [str(s) for s in expand_spec({"spec": "average-linf-standard", "rho": [1e-3], "logit_norm": True})]
    ['average-linf-standard:rho=0.001,logit_norm=true']
    """
    head, axes = _entry_axes(item)
    keys = list(axes)
    out = []
    for values in itertools.product(*(axes[k] for k in keys)):
        pairs = dict(zip(keys, values))
        text = head + ":" + ",".join(f"{k}={v}" for k, v in pairs.items())
        spec = Spec.parse(text)
        unset = {k: v for k, v in (defaults or {}).items() if k not in pairs}
        out.append(spec.replace(**unset) if unset else spec)
    return out


def _entry_axes(item: str | dict[str, Any]) -> tuple[str, dict[str, list[str]]]:
    """Split one entry into its head and, per key, the raw string values of its grid axis."""
    if isinstance(item, str):
        head, _, tail = item.strip().partition(":")
        axes: dict[str, list[str]] = {}
        for pair in _top_level_split(tail, item) if tail.strip() else []:
            key, eq, raw = pair.partition("=")
            key, raw = key.strip(), raw.strip()
            if not eq or not key:
                raise SharpnessError(f"expected key=value, got {pair!r} in {item!r}")
            _add_axis(axes, key, _grid_values(raw, item) if raw.startswith("[") else [raw], item)
        return head, axes
    if isinstance(item, dict):
        if not isinstance(item.get("spec"), str):
            raise SharpnessError(f"a mapping entry needs 'spec: case-norm[-scaling]', got {item!r}")
        head, _, tail = item["spec"].strip().partition(":")
        _, axes = _entry_axes(":" + tail) if tail else ("", {})
        for key, value in item.items():
            if key != "spec":
                _add_axis(axes, key, [_raw(v) for v in value] if isinstance(value, list) else [_raw(value)], item)
        return head, axes
    raise SharpnessError(f"a definition is a spec string or a mapping, got {item!r}")


def _add_axis(axes: dict[str, list[str]], key: str, values: list[str], item: object) -> None:
    if key in axes:
        raise SharpnessError(f"key {key!r} given twice in {item!r}")
    if key in _HEAD_FIELDS:
        raise SharpnessError(f"{key!r} belongs in the head 'case-norm-scaling', not as a key, in {item!r}")
    if not values:
        raise SharpnessError(f"empty grid for {key!r} in {item!r}")
    if len(set(values)) != len(values):
        raise SharpnessError(f"repeated value in the grid of {key!r} in {item!r}")
    axes[key] = values


def _raw(value: object) -> str:
    """A YAML value as it would be written in the spec string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and any(c in value for c in ',:="[] '):
        return json.dumps(value)
    if isinstance(value, (list, dict)) or value is None:
        raise SharpnessError(f"expected a number, string or boolean, got {value!r}")
    return str(value)


def _grid_values(raw: str, item: str) -> list[str]:
    if not raw.endswith("]"):
        raise SharpnessError(f"unclosed grid {raw!r} in {item!r}")
    inner = raw[1:-1]
    return [v.strip() for v in _top_level_split(inner, item)] if inner.strip() else []


def _top_level_split(text: str, item: str) -> list[str]:
    """Split at commas outside brackets and JSON-quoted strings."""
    parts, depth, start = [], 0, 0
    for i, kind in _scan(text, item):
        if kind == "[":
            depth += 1
        elif kind == "]":
            depth -= 1
        elif kind == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        if depth < 0:
            raise SharpnessError(f"unbalanced ']' in {item!r}")
    if depth:
        raise SharpnessError(f"unclosed '[' in {item!r}")
    parts.append(text[start:])
    return parts


def _scan(text: str, item: str) -> Iterator[tuple[int, str]]:
    """Positions of the structural characters ``[ ] ,`` that are not inside quotes."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            try:
                _, i = json.JSONDecoder().raw_decode(text, i)
            except json.JSONDecodeError:
                raise SharpnessError(f"unclosed quote in {item!r}") from None
            continue
        if c in "[],":
            yield i, c
        i += 1
