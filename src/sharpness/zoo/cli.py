"""``sharpness zoo train CONFIG --out DIR`` and ``sharpness zoo list DIR``."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from sharpness.errors import SharpnessError


def _packaged_config_names() -> list[str]:
    from importlib import resources

    folder = resources.files("sharpness.zoo") / "configs"
    return [Path(str(p)).stem for p in folder.iterdir() if str(p).endswith(".yaml")]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``zoo`` command group."""
    zoo = subparsers.add_parser(
        "zoo", help="train or inspect model zoos",
        description="Model zoos: populations of trained networks that differ in their training hyper-parameters, "
                    "each saved as a folder with model.safetensors and card.json (metrics included).")
    sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="SUBCOMMAND")
    ready = ", ".join(sorted(_packaged_config_names()))
    train = sub.add_parser(
        "train", help="train every model of a grid config (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(f"""\
            Train and evaluate every model of a declarative grid (the cartesian product of its axes, times its
            seeds). Each model goes to DIR/<model id>/; models whose card.json exists are skipped, so rerunning
            an interrupted command resumes it. Cards record hyper-parameters, train/test error and loss and an
            OOD error per distribution shift.

            Ready configs (packaged): {ready}."""),
        epilog="example: sharpness zoo train mnist1d --out runs/zoo-mnist1d\n"
               "         sharpness zoo train fmnist_resnet --out runs/zoo-resnet --reduced")
    train.add_argument("config", help="a YAML grid file or the name of a ready config")
    train.add_argument("--out", required=True, type=Path, help="folder that receives one sub-folder per model")
    train.add_argument("--reduced", action="store_true",
                       help="apply the config's `reduced:` block (smaller data and grid, for a CPU)")
    train.add_argument("--device", default=None, help="torch device (default: the config's, else cuda if present)")
    train.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bars")
    train.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="local: one model after another here; ray: one Ray task per model, with the config's "
                            "resources: {num_cpus, num_gpus, max_retries} (default: local)")
    train.add_argument("--address", default=None,
                       help="Ray cluster to join ('auto' for the one `ray start --head` runs here; default: start a "
                            "local one)")
    train.add_argument("--threads", type=int, metavar="N", default=None,
                       help="torch intra-op threads while training on the CPU (default: the config's cpu_threads)")
    train.set_defaults(func=_train)
    show = sub.add_parser(
        "list", help="summarise the model cards in a folder",
        description="One line per model folder under DIR: id, the hyper-parameters that vary across the zoo, "
                    "epochs, train and test error, and the mean OOD error.",
        epilog="example: sharpness zoo list runs/zoo-mnist1d")
    show.add_argument("dir", type=Path, help="a zoo folder (as written by 'sharpness zoo train')")
    show.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                      help="the cards as JSON lines instead of the table: into FILE, or printed without one")
    show.set_defaults(func=_list)


def _train(args: argparse.Namespace) -> int:
    from sharpness.runtime import check_threads
    from sharpness.zoo.grid import train_grid

    folders = train_grid(args.config, args.out, progress=not args.quiet, reduced=args.reduced, device=args.device,
                         backend=args.backend, address=args.address, threads=check_threads(args.threads))
    failures = args.out / "failures.json"
    failed = json.loads(failures.read_text()) if failures.is_file() else {}
    print(f"{len(folders)} models in {args.out}" + (f"; {len(failed)} failed (see {failures})" if failed else ""))
    return 1 if failed else 0


def cards(folder: Path) -> list[dict[str, Any]]:
    """The cards of every model folder directly under ``folder``, sorted by id."""
    if not folder.is_dir():
        raise SharpnessError(f"{str(folder)!r} is not a folder")
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*/card.json")) if not p.parent.name.startswith(".")]
    return sorted(found, key=lambda c: str(c.get("id")))


def _varying(found: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for c in found for k in c.get("hp", {})})
    return [k for k in keys if len({json.dumps(c.get("hp", {}).get(k), sort_keys=True) for c in found}) > 1]


def _list(args: argparse.Namespace) -> int:
    found = cards(args.dir)
    if args.json:
        lines = "".join(json.dumps(card, sort_keys=True) + "\n" for card in found)
        if args.json == "-":
            print(lines, end="")
        else:
            Path(args.json).write_text(lines)
            print(f"wrote {args.json}")
        return 0
    if not found:
        print(f"no model folders in {args.dir}")
        return 0
    varying = _varying(found) + (["seed"] if len({c.get("seed") for c in found}) > 1 else [])
    header = ["id", *varying, "epochs", "train_err", "test_err", "ood_err"]
    rows: list[list[Any]] = [header]
    for card in found:
        m = card.get("metrics", {})
        ood = [v for k, v in m.items() if k.startswith("ood.") and k.endswith("_err")]
        values = [card.get("seed") if k == "seed" else card["hp"].get(k) for k in varying]
        rows.append([card.get("id"), *values, card.get("epochs"), _fmt(m.get("train_err")), _fmt(m.get("test_err")),
                     _fmt(sum(ood) / len(ood) if ood else None)])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
