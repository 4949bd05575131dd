"""Calibrate each definition's radius on a trained zoo, by a rule fixed before any correlation is seen.

    python reproductions/calibrate.py reproductions/vit_scratch [--models 8] [--threads 2]

The setting's ``calibration.yaml`` lists, per definition (a spec string without ``rho``), a grid of
radii, and the evaluation options (``n_examples``, ``m``, ``n_iters``; a calibration may use fewer
iterations than the study). Every ``--models``-th model of the zoo (evenly spaced through the zoo's
sorted ids, so every part of the grid is seen) is measured at every radius; the rows go to
``calibration.csv`` in the setting's folder as they are computed, so an interrupted run resumes.

The rule, the same for every definition and setting: the chosen radius is the smallest of the grid at
which, in the median over the measured models,

* the loss increase is at least ``--min-increase`` (default 0.05) and at least ``--min-snr`` (default 10)
  standard errors (the worst case's over m-batches, the average case's Monte-Carlo error), and
* the 0-1 error increase is at most ``--max-error`` (default 0.25): not saturated.

A setting's ``calibration.yaml`` may change a threshold under ``rule:`` (saying why); the command line
overrides both. A definition with no such radius is reported as such (the grid must then be widened, never the rule
bent). ``calibration.md`` gets the medians at every radius and the chosen one; ``--print-specs`` prints
the chosen definitions as the study config's ``specs:`` lines.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

RULE = {"min_increase": 0.05, "min_snr": 10.0, "max_error": 0.25}
FIELDS = ["model", "definition", "rho", "value", "stderr", "error_increase", "seconds"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setting", type=Path, help="the setting's folder (holds calibration.yaml)")
    p.add_argument("--zoo", type=Path, default=None, help="the trained zoo (default: runs/<setting name>/zoo)")
    p.add_argument("--models", type=int, default=None,
                   help="how many models to calibrate on (default: the config's models:, else 8)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the config's threads:, else torch's)")
    p.add_argument("--min-increase", type=float, default=None, help="default 0.05, or the config's rule:")
    p.add_argument("--min-snr", type=float, default=None, help="default 10, or the config's rule:")
    p.add_argument("--max-error", type=float, default=None, help="default 0.25, or the config's rule:")
    p.add_argument("--print-specs", action="store_true", help="print the chosen definitions and stop")
    args = p.parse_args(argv)

    cfg = yaml.safe_load((args.setting / "calibration.yaml").read_text())
    if args.models is None:
        args.models = int(cfg.get("models", 8))
    if args.threads is None and cfg.get("threads") is not None:
        args.threads = int(cfg["threads"])
    rule = {**RULE, **(cfg.get("rule") or {})}
    for key in RULE:  # the command line overrides the config's rule, which overrides the defaults
        if getattr(args, key) is None:
            setattr(args, key, rule[key])
    rows_path = args.setting / "calibration.csv"
    if not args.print_specs:
        zoo = args.zoo or Path("runs") / args.setting.name / "zoo"
        measure_grid(cfg, zoo, rows_path, args.models, args.threads)
    rows = read_rows(rows_path)
    summary = summarise(rows, cfg, args.min_increase, args.min_snr, args.max_error)
    if args.print_specs:
        for line in chosen_specs(summary):
            print(f"  - {line}")
        return 0
    (args.setting / "calibration.md").write_text(markdown(summary, cfg, args, len({r["model"] for r in rows})))
    print((args.setting / "calibration.md").read_text())
    return 0


# ------------------------------------------------------------------ measuring
def measure_grid(cfg: dict[str, Any], zoo: Path, rows_path: Path, n_models: int, threads: int | None) -> None:
    import torch

    import sharpness
    from sharpness import zoo as zoo_api

    if threads is not None:
        torch.set_num_threads(threads)
    folders = sorted(f for f in zoo.iterdir() if (f / "card.json").is_file())
    if not folders:
        raise SystemExit(f"{zoo} holds no trained models; train the zoo first")
    step = max(1, len(folders) // n_models)
    chosen = folders[::step][:n_models]
    done = {(r["model"], r["definition"], float(r["rho"])) for r in read_rows(rows_path)}
    options = cfg.get("eval", {})
    new_file = not rows_path.exists()
    with rows_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for folder in chosen:
            model, card = zoo_api.load(folder)
            data = zoo_api.inputs(card, "train", options.get("n_examples"))
            for definition, radii in cfg["definitions"].items():
                for rho in radii:
                    if (folder.name, definition, float(rho)) in done:
                        continue
                    spec = sharpness.Spec.parse(with_rho(definition, rho)).replace(**options)
                    start = time.perf_counter()
                    result = sharpness.measure(model, data, spec, progress=False)
                    writer.writerow({"model": folder.name, "definition": definition, "rho": rho,
                                     "value": result.value, "stderr": result.stderr,
                                     "error_increase": result.error_increase,
                                     "seconds": round(time.perf_counter() - start, 3)})
                    handle.flush()
            print(f"calibrated {folder.name}", file=sys.stderr, flush=True)


def with_rho(definition: str, rho: object) -> str:
    """The spec string of ``definition`` at radius ``rho``.

    >>> with_rho("worst-l2", 0.1), with_rho("worst-l2:logit_norm=true", 0.1)
    ('worst-l2:rho=0.1', 'worst-l2:rho=0.1,logit_norm=true')
    """
    head, _, tail = definition.partition(":")
    return f"{head}:rho={rho}" + (f",{tail}" if tail else "")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------- the rule
def summarise(rows: list[dict[str, str]], cfg: dict[str, Any], min_increase: float, min_snr: float,
              max_error: float) -> dict[str, list[dict[str, Any]]]:
    """Per definition, the medians at each radius and whether the radius passes the rule."""
    out: dict[str, list[dict[str, Any]]] = {}
    for definition, radii in cfg["definitions"].items():
        lines = []
        for rho in radii:
            at = [r for r in rows if r["definition"] == definition and float(r["rho"]) == float(rho)]
            if not at:
                continue
            values = [float(r["value"]) for r in at]
            snr = [float(r["value"]) / float(r["stderr"]) if r["stderr"] not in ("", "0", "0.0") else math.inf
                   for r in at]
            errors = [float(r["error_increase"]) for r in at if r["error_increase"] != ""]
            line = {"rho": float(rho), "n": len(at), "increase": statistics.median(values),
                    "max_increase": max(values), "snr": statistics.median(snr),
                    "error": statistics.median(errors) if errors else math.nan}
            line["passes"] = (line["increase"] >= min_increase and line["snr"] >= min_snr
                              and not line["error"] > max_error)
            lines.append(line)
        first = next((line for line in lines if line["passes"]), None)
        for line in lines:
            line["chosen"] = line is first
        out[definition] = lines
    return out


def chosen_specs(summary: dict[str, list[dict[str, Any]]]) -> list[str]:
    specs = []
    for definition, lines in summary.items():
        chosen = [line for line in lines if line["chosen"]]
        specs.append(with_rho(definition, f"{chosen[0]['rho']:g}") if chosen else f"# {definition}: no radius passes")
    return specs


def markdown(summary: dict[str, list[dict[str, Any]]], cfg: dict[str, Any], args: argparse.Namespace,
             n_models: int) -> str:
    options = ", ".join(f"{k}={v}" for k, v in cfg.get("eval", {}).items())
    head = [
        "# Radius calibration",
        "",
        f"Written by `python reproductions/calibrate.py {args.setting}` from `calibration.csv` "
        f"({n_models} models of the zoo, {options}). Rule: the smallest radius whose median loss increase "
        f"is at least {args.min_increase:g} and at least {args.min_snr:g} standard errors, with a median 0-1 "
        f"error increase of at most {args.max_error:g}. Chosen radii in bold.",
        "",
        "| definition | rho | median loss increase | max | median value / s.e. | median error increase |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    body = []
    for definition, lines in summary.items():
        for line in lines:
            rho = f"**{line['rho']:g}**" if line["chosen"] else f"{line['rho']:g}"
            body.append(f"| `{definition}` | {rho} | {line['increase']:.3g} | {line['max_increase']:.3g} | "
                        f"{line['snr']:.3g} | {line['error']:.3f} |")
        if not any(line["chosen"] for line in lines):
            body.append(f"| `{definition}` | none passes | | | | |")
    return "\n".join(head + body) + "\n"


if __name__ == "__main__":
    sys.exit(main())
