"""``make demo``: the paper's experiment on MNIST-1D, end to end, in a few minutes on two cores.

``python -m sharpness.demo [--out runs/demo]`` trains the MNIST-1D zoo, measures every model under
the paper's twelve definitions (worst / average case × L2 / L∞ × standard / elementwise-adaptive /
adaptive with logit normalisation), correlates them with test, OOD and generalization-gap targets,
writes ``report.html`` with its figures, prints the τ table, and prints the report's absolute path last.
Everything lands in the study folder (default ``runs/demo`` under the working directory); running
it again only computes what is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CONFIG = Path(__file__).resolve().parent / "study" / "configs" / "demo.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sharpness.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / "demo", help="study folder (default: runs/demo)")
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from sharpness.study.report import report
    from sharpness.study.runner import run

    start = time.perf_counter()
    summary = run(CONFIG, out=args.out, progress=not args.no_progress)
    path, tau = report(summary.folder)
    print(tau)
    print(f"{summary.done}/{summary.total} units done, {summary.failed} failed, "
          f"in {time.perf_counter() - start:.0f} s; study folder: {summary.folder}")
    print(path.resolve())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
