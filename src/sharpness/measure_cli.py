"""``sharpness measure`` and ``sharpness spec``: the command-line face of :func:`sharpness.measure`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sharpness.errors import SharpnessError
from sharpness.modes import DEFAULT_MODE, MODES
from sharpness.runtime import check_threads, device_named, torch_threads
from sharpness.spec import Spec

SPEC_HELP = (
    "a one-line spec 'case-norm[-scaling]:rho=R,key=value,...', e.g. 'worst-linf-elementwise:rho=0.002' or "
    "'average-l2:rho=0.05,n_iters=50,logit_norm=true' (repeatable)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "measure",
        help="measure the sharpness of one saved model",
        description=(
            "Measure the sharpness of a model on a seeded subset of its data, for one or more definitions. The "
            "model is a folder written by 'sharpness zoo train' (model.safetensors + card.json: its card names its "
            "data), a Hugging Face save_pretrained folder (config.json + weights, a sequence classifier, loaded "
            "offline), or timm:NAME with --weights FILE; the last two need --data."
        ),
        epilog="examples:\n  sharpness measure runs/zoo/mlp-1a2b3c4d5e --spec worst-linf:rho=0.002 "
        "--spec average-l2:rho=0.05 --json out.json\n"
        "  sharpness measure ./my-bert --data dev.csv --spec worst-linf:rho=0.001,m=32,n_examples=256\n"
        "  sharpness measure timm:vit_small_patch16_224 --weights vit.safetensors --data images.npz "
        "--spec worst-l2:rho=0.1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path,
                   help="model folder (card.json + model.safetensors), Hugging Face folder, or timm:NAME")
    p.add_argument("--data", type=Path, metavar="FILE",
                   help="data to measure on: .npz / .pt tensors (x, y) or .csv / .jsonl / .parquet text with "
                        "'text' and 'label' columns (default: the card's data, for a zoo folder)")
    p.add_argument("--weights", type=Path, metavar="FILE", help="timm:NAME: its weights (.safetensors, .pth, .npz)")
    p.add_argument("--spec", action="append", required=True, metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--split", default="train", choices=["train", "test"], help="data split to measure on")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES,
                   help="how to execute, not what to measure: exact (default) or fast (reduced-precision searches "
                        "re-evaluated in the model's dtype, stacked passes), as measure(..., mode=...)")
    p.add_argument("--float64", action="store_true", help="measure in float64 (default: the model's dtype)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch intra-op threads on the CPU (default: torch's); small models run fastest on 1, "
                   "and extra threads on a busy machine can slow them down many times")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as a JSON list")
    p.set_defaults(func=run_measure)

    s = subparsers.add_parser(
        "spec",
        help="check a spec string and show its canonical form, id and JSON",
        description="Validate one-line specs; prints the canonical string, the stable id and every field.",
        epilog="example: sharpness spec 'worst-linf:rho=2e-3,m=128'",
    )
    s.add_argument("spec", nargs="+", metavar="SPEC", help=SPEC_HELP)
    s.set_defaults(func=run_spec)


def run_spec(args: argparse.Namespace) -> int:
    for text in args.spec:
        spec = Spec.parse(text)
        print(f"{spec}\n  id: {spec.id}\n  json: {spec.to_json()}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    import torch

    from sharpness.measure import measure
    from sharpness.zoo.model_inputs import to_device

    specs = [Spec.parse(text) for text in args.spec]
    check_threads(args.threads)
    device = device_named(args.device, "--device")
    if args.json is not None:
        check_writable(args.json, "--json")
    model, card, x, y = _model_and_data(args)
    model = model.to(device, dtype=torch.float64) if args.float64 else model.to(device)
    x, y = to_device(x, device, torch.float64 if args.float64 else None), y.to(device)
    records: list[dict[str, Any]] = []
    print(f"{'spec':<52} {'value':>12} {'stderr':>10} {'err incr':>9} {'radius':>10} {'s':>7}")
    try:
        for spec in specs:
            with torch_threads(args.threads):
                res = measure(model, (x, y), spec, mode=args.mode)
            records.append({"model": card.get("id", str(args.model)), **res.to_dict()})
            print(f"{spec!s:<52} {res.value:>12.6g} {_fmt(res.stderr):>10} {_fmt(res.error_increase):>9} "
                  f"{_fmt(res.radius):>10} {res.seconds:>7.2f}")
    except KeyboardInterrupt:  # keep what finished; the model itself is already restored
        _write(args.json, records)
        print(f"sharpness: interrupted after {len(records)} of {len(specs)} definitions"
              + (f"; wrote them to {args.json}" if args.json else ""), file=sys.stderr)
        return 130
    _write(args.json, records)
    return 0


def _write(path: Path | None, records: list[dict[str, Any]]) -> None:
    if path is not None:
        path.write_text(json.dumps(records, indent=2))
        print(f"wrote {path}")


def check_writable(path: Path, option: str) -> None:
    """Fail before any work when ``path`` could not be written at the end."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SharpnessError(f"{option}: {str(path)!r} is a folder, not a file")
    if not parent.is_dir():
        raise SharpnessError(f"{option}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SharpnessError(f"{option}: {str(path)!r} is not writable")


def _model_and_data(args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any, Any]:
    """The model the command names, its card (or a description) and the ``(X, Y)`` to measure on."""
    from sharpness import zoo
    from sharpness.zoo.data_files import read_data

    text = str(args.model)
    if text.startswith("timm:"):
        from sharpness.zoo.adapters import timm_model

        if args.weights is None or args.data is None:
            raise SharpnessError(f"{text}: a timm model needs --weights FILE and --data FILE")
        if not args.weights.is_file():
            raise SharpnessError(f"--weights: {str(args.weights)!r} does not exist")
        x, y = read_data(args.data)
        model = timm_model(text.removeprefix("timm:"), weights=str(args.weights))
        return model.eval(), {"id": text}, x, y
    if (args.model / "card.json").is_file():
        model, card = zoo.load(args.model)
        x, y = read_data(args.data) if args.data is not None else zoo.inputs(card, args.split)
        return model, card, x, y
    if (args.model / "config.json").is_file():
        from sharpness.zoo.adapters import HFClassifier

        if args.data is None:
            raise SharpnessError(f"{text!r} is a Hugging Face folder: say what to measure on with --data FILE")
        model = HFClassifier(text)
        config: Any = model.model.config
        label_ids = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
        x, y = read_data(args.data, encode=model.encode, label_ids=label_ids or None)
        return model.eval(), {"id": text}, x, y
    raise SharpnessError(f"{text!r} is not a model folder: it has no card.json (a sharpness zoo model) and no "
                         "config.json (a Hugging Face model); a timm model is written timm:NAME")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"
