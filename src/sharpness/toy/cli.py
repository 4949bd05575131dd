"""``sharpness toy logistic|diagonal``: the two simple models, as figures and a JSON of the numbers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from sharpness.errors import SharpnessError
from sharpness.runtime import check_threads, torch_threads

_LOGISTIC_HELP = """\
Why: every alpha * w (alpha > 0) is the same linear classifier, yet its sharpness is not constant
along that ray, not even with adaptive (elementwise) or norm-relative radii. This reruns the paper's
notebook: two Gaussian classes with means +-v (d=100, n=50, noise 0.025), gradient descent, then
the worst-case L2 sharpness of alpha * w for alpha in [2^-10, 2^10] under the standard,
elementwise-adaptive and norm-relative (rho * ||w||_2) radii, with and without logit
normalisation; m = 1 in closed form (margin drop rho * ||c * x||_2) and m = n by Auto-PGD
through sharpness.measure from the zero start and several random starts.

Writes DIR/logistic.json and DIR/logistic.png. Example:
  sharpness toy logistic --out runs/toy --rho 0.5 --n-starts 5
"""

_DIAGONAL_HELP = """\
Why: for diagonal linear networks f(x) = <u * v, x> on sparse regression, the Hessian trace
(standard average-case sharpness) is sum_i (u_i^2 + v_i^2), about 2 ||beta||_1 in the rich regime,
while the adaptive trace is 2 ||beta||_2^2 whatever the factorisation. Which one tracks the test
loss depends on the data. This trains n_nets networks from u0 = alpha 1, v0 = 0 (alpha log-spaced
from the rich to the kernel regime) to a train loss of 1e-5 on four tasks (sparse and dense
targets with unit-norm columns; a sparse target with random feature scales; a sparse target on
weak features), measures standard and adaptive worst- and average-case sharpness through
sharpness.measure, and reports the Kendall tau of every measure against the test loss.

Writes DIR/diagonal.json and DIR/diagonal.png. Example:
  sharpness toy diagonal --out runs/toy --n-nets 50 --trainer gd
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``toy logistic`` and ``toy diagonal``."""
    from sharpness.toy.configs import DiagonalConfig, LogisticConfig

    toy = subparsers.add_parser(
        "toy",
        help="simple models showing why the right sharpness measure depends on the data",
        description="Simple models (logistic regression, diagonal linear networks) with closed forms.",
    )
    sub = toy.add_subparsers(dest="toy_command", required=True, metavar="MODEL")
    commands = (
        ("logistic", LogisticConfig, "sharpness of the one classifier alpha * w along the ray", _LOGISTIC_HELP),
        ("diagonal", DiagonalConfig, "diagonal linear networks: the measure that tracks test loss flips with the data",
         _DIAGONAL_HELP),
    )
    for name, config, summary, text in commands:
        p = sub.add_parser(name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)")
        p.add_argument("--threads", type=int, metavar="N", default=1,
                       help="torch intra-op threads (default: 1, the fastest for these small models)")
        _add_config_options(p, config)
        p.set_defaults(func=_run_logistic if name == "logistic" else _run_diagonal, config_cls=config)


# Other spellings of a config option: the Spec field's name where a config says it differently.
ALIASES = {"n_starts": ("--n-restarts",)}


def _add_config_options(parser: argparse.ArgumentParser, config: type) -> None:
    """One ``--field-name`` option per field of a config dataclass, defaulting to the field's default."""
    hints = typing.get_type_hints(config)
    for field in dataclasses.fields(config):
        hint = hints[field.name]
        flags = ["--" + field.name.replace("_", "-"), *ALIASES.get(field.name, ())]
        text = field.metadata.get("help", field.name.replace("_", " "))
        if typing.get_origin(hint) is typing.Literal:
            parser.add_argument(*flags, dest=field.name, choices=typing.get_args(hint), default=field.default,
                                help=text)
        else:
            parser.add_argument(*flags, dest=field.name, type=hint, default=field.default,
                                help=f"{text} (default {field.default})")


def _config(args: argparse.Namespace) -> Any:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args.config_cls)}
    return args.config_cls(**values)




def _prepare(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise SharpnessError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _run_logistic(args: argparse.Namespace) -> int:
    from sharpness.toy import logistic

    threads, config = check_threads(args.threads), _config(args)  # bad input fails before the folder is made
    out = _prepare(args.out)
    with torch_threads(threads):
        results = logistic.run(config)
    (out / "logistic.json").write_text(json.dumps(results, indent=1))
    logistic.plot(results, str(out / "logistic.png"))
    print(f"||w||_2 = {results['weight_norm']:.4f}, train loss {results['train_loss']:.4f}, "
          f"test error {results['test_error']:.3f}")
    print(f"{'alpha':>10} {'radius':>12} {'logit_norm':>10} {'m=1':>10} {'m=n best':>10} {'m=n spread':>10}")
    alphas = sorted({r["alpha"] for r in results["rows"]})
    shown = set(alphas[:: max(1, len(alphas) // 6)])
    for r in results["rows"]:
        if r["alpha"] in shown:
            starts = r["mn"]["random_starts"]
            print(f"{r['alpha']:>10.4g} {r['radius']:>12} {r['logit_norm']!s:>10} {r['m1']:>10.4g} "
                  f"{r['mn']['best']:>10.4g} {max(starts) - min(starts):>10.2g}")
    print(out / "logistic.json")
    return 0


def _run_diagonal(args: argparse.Namespace) -> int:
    from sharpness.toy import diagonal

    threads, config = check_threads(args.threads), _config(args)  # bad input fails before the folder is made
    out = _prepare(args.out)
    with torch_threads(threads):
        results = diagonal.run(config)
    (out / "diagonal.json").write_text(json.dumps(results, indent=1))
    diagonal.plot(results, str(out / "diagonal.png"))
    print("Kendall tau of each measure against the test loss")
    print(f"{'task':>22} " + " ".join(f"{m:>17}" for m in diagonal.MEASURES))
    for name, task in results["tasks"].items():
        print(f"{name:>22} " + " ".join(f"{task['kendall_tau'][m]:>+17.2f}" for m in diagonal.MEASURES))
    sparse = results["tasks"]["sparse"]["kendall_tau"]
    print("sparse task beside da Silva et al. (2025, Table 1; d = 200, 50 nets): "
          + ", ".join(f"{m} {sparse[m]:+.2f} (paper {p:+.2f})" for m, p in diagonal.PAPER_TAU.items()))
    print("closed forms vs autograd Hessians (relative error):",
          ", ".join(f"{k} {v:.1e}" for k, v in results["checks"].items()))
    print(out / "diagonal.json")
    return 0
