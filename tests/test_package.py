"""The package's entry points: light to import, and the public names what the API says."""

from __future__ import annotations

import subprocess
import sys

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
