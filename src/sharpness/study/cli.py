"""``sharpness study run | status | report``: the study runner on the command line."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from sharpness.modes import MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sharpness study`` and its three commands."""
    study = subparsers.add_parser(
        "study",
        help="measure every model of a zoo under every definition, then correlate and report",
        description=textwrap.dedent("""\
            A study measures every model of a zoo under every definition of sharpness, one row per
            (model, definition) in STUDY/study.sqlite, and asks whether sharpness tracks test error,
            out-of-distribution error or a training hyper-parameter.
            Runs are resumable: kill one at any point and run the same command again."""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = study.add_subparsers(dest="study_command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_status(commands)
    _add_report(commands)


def _add_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run",
        help="compute the rows a study still lacks",
        description=textwrap.dedent("""\
            Train or list the zoo, then measure each (model, definition) pair that has no row yet.
            Each row is written in its own transaction, so a killed run loses only the units in flight.
            Writes STUDY/results.csv and STUDY/results.parquet at the end.
            Exit status 0 only when every unit is done."""),
        epilog=textwrap.dedent("""\
            a minimal config (the full format is in docs/study.md):
              zoo: {config: mnist1d}                    # a zoo to train, or {folder: DIR} of trained models
              eval: {n_examples: 512, m: 128}
              specs:
                - worst-linf-elementwise:rho=0.002
                - average-l2-elementwise:rho=[0.05,0.1]  # a grid: two definitions

            example:
              sharpness study run study.yaml --out runs/mnist1d
              sharpness study run study.yaml --backend ray --address auto   # on a running Ray cluster
              sharpness study run study.yaml --retry-failed                 # compute failed units again"""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", type=Path, help="the study config (YAML)")
    p.add_argument("--out", type=Path, default=None, help="study folder (default: runs/<name of the config>)")
    p.add_argument("--threads", type=int, metavar="N", default=None,
                   help="torch intra-op threads for measuring on the CPU (default: the config's eval.threads)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="how measure() executes: exact or fast (default: the config's eval.mode, else exact); "
                        "fast rows have keys of their own")
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: in this process (default); ray: one Ray task per unit",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. 'auto' or 'ray://head:10001'); default: start a local cluster",
    )
    p.add_argument("--retry-failed", action="store_true", help="compute the units that failed before again")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _add_status(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "status",
        help="how many units are done, failed or pending",
        description="Count the units of a study's latest plan and list the failed ones with their errors. "
        "Safe while a run is writing. Exit status 0 only when every unit is done.",
        epilog="example:\n  sharpness study status runs/mnist1d",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, help="the study folder")
    p.set_defaults(func=_status)


def _add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="correlate sharpness with generalization: figures, report.html and the tau table",
        description="Read the study's table, write STUDY/report.html and STUDY/figures/, and print the table of "
        "Kendall tau between each definition and each target.",
        epilog="example:\n  sharpness study report runs/mnist1d --color-by lr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, help="the study folder")
    p.add_argument(
        "--color-by",
        default=None,
        help="hyper-parameter colouring the scatter plots (default: the config's report.color_by)",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="folder for report.html and figures/ (default: the study folder; needed when it is read-only)")
    p.set_defaults(func=_report)


def _run(args: argparse.Namespace) -> int:
    from sharpness.runtime import check_threads
    from sharpness.study.runner import run

    summary = run(
        args.config,
        threads=check_threads(args.threads),
        mode=args.mode,
        out=args.out,
        backend=args.backend,
        address=args.address,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    print(
        f"{summary.folder}: {summary.done}/{summary.total} done, {summary.failed} failed, "
        f"{summary.pending} pending ({summary.computed} computed in this run)"
    )
    if summary.failed:
        print(f"see the errors with: sharpness study status {summary.folder}", file=sys.stderr)
    return 0 if summary.ok else 1


def _status(args: argparse.Namespace) -> int:
    from sharpness.study.store import status

    counts = status(args.folder)
    print(
        f"{args.folder}: {counts['done']}/{counts['total']} done, {counts['failed']} failed, "
        f"{counts['pending']} pending"
    )
    for f in counts["failures"]:
        print(f"  failed: {f['model']}  {f['spec']}\n    {f['error']}")
    return 0 if counts["total"] and counts["done"] == counts["total"] else 1


def _report(args: argparse.Namespace) -> int:
    from sharpness.study.report import report
    from sharpness.study.store import status

    path, tau = report(args.folder, color_by=args.color_by, out=args.out)
    print(tau)
    print(path)
    counts = status(args.folder)
    return 0 if counts["total"] and counts["done"] == counts["total"] else 1
