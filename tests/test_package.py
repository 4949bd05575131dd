"""The package's entry points: light to import, and the public names what the API says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "yaml", "pandas", "scipy", "matplotlib", "transformers", "ray")


def test_the_command_line_builds_without_heavy_imports() -> None:
    code = ("import sys, sharpness.cli; sharpness.cli.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_every_help_page_prints_without_heavy_imports() -> None:
    for command in ("measure", "spec", "zoo", "study", "toy", "bench"):
        code = ("import sys, contextlib, io, sharpness.cli\n"
                "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
                f"    sharpness.cli.main([{command!r}, '--help'])\n"
                f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "", command


def test_public_names_resolve_whatever_was_imported_first() -> None:
    code = ("import sharpness.measure, sharpness.fast, sharpness.zoo.grid\n"
            "import sharpness, sharpness.zoo, sharpness.study\n"
            "from sharpness import Result, SharpnessError, Spec, measure\n"
            "assert callable(measure) and measure.__name__ == 'measure' and sharpness.measure is measure\n"
            "assert Result.__name__ == 'Result' and sharpness.zoo.load.__name__ == 'load'\n"
            "assert sharpness.study.load.__module__ == 'sharpness.study.store'\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"


def test_a_command_missing_an_optional_package_names_the_extra(tmp_path) -> None:
    code = ("import sys; sys.modules['yaml'] = None\n"  # as after `pip install sharpness` without extras
            "from sharpness.cli import main\n"
            f"sys.exit(main(['study', 'run', {str(tmp_path / 'study.yaml')!r}]))")
    (tmp_path / "study.yaml").write_text("zoo: {folder: zoo}\nspecs: [worst-l2:rho=0.1]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'sharpness[study]'" in done.stderr


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["zoo", "train", "mnist1d", "--out", "x", "--no-progress"], "quiet", True),
    (["zoo", "train", "mnist1d", "--out", "x", "--quiet"], "quiet", True),
    (["study", "run", "c.yaml", "--quiet"], "no_progress", True),
    (["study", "run", "c.yaml", "--no-progress"], "no_progress", True),
    (["toy", "logistic", "--out", "x", "--n-restarts", "3"], "n_starts", 3),
    (["toy", "logistic", "--out", "x", "--n-starts", "3"], "n_starts", 3),
    (["zoo", "list", "d", "--json"], "json", "-"),
    (["zoo", "list", "d", "--json", "cards.jsonl"], "json", "cards.jsonl"),
])
def test_one_spelling_per_option_the_others_are_aliases(argv: list[str], dest: str, value: object) -> None:
    from sharpness.cli import build_parser

    assert getattr(build_parser().parse_args(argv), dest) == value


@pytest.mark.parametrize("argv", [["zoo", "train", "mnist1d", "--out", "x"], ["study", "run", "c.yaml"],
                                  ["toy", "diagonal", "--out", "x"], ["measure", "m", "--spec", "worst-l2:rho=1"]])
def test_every_command_that_computes_takes_threads(argv: list[str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from sharpness.cli import build_parser, main

    monkeypatch.chdir(tmp_path)
    assert build_parser().parse_args([*argv, "--threads", "3"]).threads == 3
    assert main([*argv, "--threads", "0"]) == 2  # refused before any work
    assert list(tmp_path.iterdir()) == []  # and nothing written
