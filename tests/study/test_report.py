"""The study report: files, escaping, numbers, and a render in headless Chromium."""

from __future__ import annotations

import base64
import html
import itertools
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sharpness import Spec, stats
from sharpness.errors import SharpnessError
from sharpness.study.report import analyse, family, format_tau_table, write_report
from testkit import needs_chromium

EVIL = "<script>alert(1)</script>"
EVIL_ERROR = 'RuntimeError: <img src=x onerror="alert(2)">'
SPECS = [
    *(str(Spec(case="worst", norm="linf", rho=r)) for r in (0.001, 0.002, 0.004)),
    *(str(Spec(case="average", norm="l2", rho=r, scaling="standard", logit_norm=True)) for r in (0.05, 0.1)),
    str(Spec(case="worst", norm="l2", rho=0.1, params="fc$")),
]
FIGURES = ("scatter", "tau_vs_rho", "tau_heatmap", "psi_per_axis")
CHROMIUM = Path("/usr/bin/chromium")


def study_table() -> pd.DataFrame:
    """A study's long table: 32 models (lr x batch size x optimizer x seed) x 6 definitions."""
    rng = np.random.default_rng(0)
    rows = []
    for lr, bs, opt, seed in itertools.product([0.01, 0.03, 0.1, 0.3], [32, 128], ["sgd", EVIL], [0, 1]):
        model = f"mlp-{len(rows):03d}"
        err = 0.3 - 0.066 * math.log10(lr / 0.01) + 0.02 * (bs == 128) + rng.normal(0, 0.01)
        metrics = {
            "metric.train_err": 0.01,
            "metric.test_err": err,
            "metric.ood.gaussian_noise_err": err + 0.2 + rng.normal(0, 0.03),
            "metric.ood.rotate_err": err + 0.3,
        }
        for k, spec in enumerate(SPECS):
            failed = (lr, bs, seed, k) == (0.3, 32, 1, 0)
            rows.append({
                "model": model, "spec": spec, "value": math.nan if failed else (1 + k) / lr + rng.normal(0, 3),
                "stderr": None, "error_increase": 0.0, "status": "failed" if failed else "done",
                "error": EVIL_ERROR if failed else None,
                "hp.lr": lr, "hp.batch_size": bs, "hp.optimizer": opt, "hp.seed": seed, **metrics,
            })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(study_table(), tmp_path_factory.mktemp("study"), n_boot=50)


def test_report_writes_html_and_valid_png_and_pdf_figures(report):
    assert report.name == "report.html" and report.stat().st_size > 10_000
    for name in FIGURES:
        png, pdf = (report.parent / "figures" / f"{name}.{ext}" for ext in ("png", "pdf"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"
        assert Image.open(png).size[0] > 400


def test_report_html_is_escaped_and_self_contained(report):
    page = report.read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page
    assert html_escaped(EVIL) in page
    assert html_escaped(EVIL_ERROR) in page
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    assert "<link" not in page and "<style>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    for spec in SPECS:
        assert html_escaped(spec) in page


def html_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def test_terminal_table_matches_an_independent_tau():
    df = study_table()
    text = format_tau_table(df, targets=["test_err", "lr"])
    lines = text.splitlines()
    n = len(SPECS)
    assert len(lines) == 2 + n + 3 + n  # then: a blank line, a title, a header, tau within each optimizer
    assert lines[1].split()[-2:] == ["error", "lr"]
    assert lines[3 + n] == "within each optimizer: tau-b with test error"
    assert lines[4 + n].split()[-4:] == ["sgd", "(n=16)", html.unescape(html_escaped(EVIL)), "(n=16)"]
    table = stats.per_model(df)
    for spec, line, within in zip(SPECS, lines[2 : 2 + n], lines[5 + n :], strict=True):
        shown = [float(v) for v in line.split()[-2:]]
        done = table[spec].notna()
        for value, target in zip(shown, ["metric.test_err", "hp.lr"], strict=True):
            expected = pair_count_tau(table.loc[done, spec].tolist(), table.loc[done, target].tolist())
            assert value == pytest.approx(expected, abs=0.005)
        for value, opt in zip([float(v) for v in within.split()[-2:]], ["sgd", EVIL], strict=True):
            group = table[done & (table["hp.optimizer"] == opt)]
            expected = pair_count_tau(group[spec].tolist(), group["metric.test_err"].tolist())
            assert value == pytest.approx(expected, abs=0.005)


def test_report_shows_tau_within_each_categorical_axis(report):
    a = analyse(study_table(), n_boot=10)
    assert list(a.within) == ["hp.optimizer"]  # lr and batch size are amounts: Psi covers them
    table = stats.per_model(study_table())
    for spec in SPECS:
        within = a.within["hp.optimizer"][spec]
        for opt in ("sgd", EVIL):
            group = table[(table["hp.optimizer"] == opt) & table[spec].notna()]
            expected = pair_count_tau(group[spec].tolist(), group["metric.test_err"].tolist())
            assert within.loc[opt, "tau"] == pytest.approx(expected)
            assert within.loc[opt, "n"] == len(group)
    page = report.read_text(encoding="utf-8")
    assert "within each optimizer" in page and f"{html_escaped(EVIL)} (n=16)" in page


def pair_count_tau(a: list[float], b: list[float]) -> float:
    s = [(np.sign(a[j] - a[i]), np.sign(b[j] - b[i])) for i, j in itertools.combinations(range(len(a)), 2)]
    p, q = sum(x * y > 0 for x, y in s), sum(x * y < 0 for x, y in s)
    t_a, t_b = sum(x == 0 != y for x, y in s), sum(y == 0 != x for x, y in s)
    return (p - q) / math.sqrt((p + q + t_a) * (p + q + t_b))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("worst-linf:rho=0.002", ("worst-linf-elementwise", 0.002)),
        ("average-l2-standard:n_iters=50,rho=0.1", ("average-l2-standard:n_iters=50", 0.1)),
        ('worst-l2:rho=1e-3,params="a,b"', ('worst-l2-elementwise:params="a,b"', 0.001)),
        ("handmade measure", ("handmade measure", math.nan)),
    ],
)
def test_family_drops_only_rho(spec, expected):
    fam, rho = family(spec)
    assert fam == expected[0]
    assert rho == expected[1] or (math.isnan(rho) and math.isnan(expected[1]))


def test_report_of_a_study_where_everything_failed(tmp_path):
    df = study_table().assign(status="failed", value=math.nan)
    page = write_report(df, tmp_path, n_boot=10).read_text(encoding="utf-8")
    assert "0 measurements done" in page and "data:image/png" not in page
    assert "Kendall tau-b" in format_tau_table(df)


@pytest.mark.parametrize(("kwargs", "match"), [({"targets": ["nope"]}, "unknown target"), ({"color_by": "x"}, "color")])
def test_report_rejects_unknown_columns(tmp_path, kwargs, match):
    with pytest.raises(SharpnessError, match=match):
        write_report(study_table(), tmp_path, **kwargs)


@needs_chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
        report.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), f"no screenshot; chromium exit {done.returncode}: {done.stderr[-2000:]}"
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    pixels = np.asarray(image, dtype=float)
    gray = pixels.mean(axis=2)
    assert gray.std() > 20, "the page rendered (nearly) blank"
    assert (gray < 200).mean() > 0.03, "too little ink: text and figures are missing"
    assert gray[:200].std() > 10, "the title area is blank"
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 100).mean() > 0.01, "no coloured cells or figures were drawn"


# ------------------------------------------------------ what to read with care
def _with_stderr(df: pd.DataFrame, spec: str, stderr: float) -> pd.DataFrame:
    df = df.copy()
    df.loc[df["spec"] == spec, "stderr"] = stderr
    return df


@pytest.mark.parametrize(
    ("n_models", "stderr", "expected"),
    [
        (32, 1e-9, []),                                   # many models, tiny errors: a clean τ (about +0.7)
        (8, 1e-9, ["only 8 models"]),
        (32, 1e9, ["32 of 32 within 2 s.e. of 0"]),       # every value is noise-sized
    ],
)
def test_caveats_flag_few_models_and_values_in_the_noise(n_models, stderr, expected):
    df = study_table()
    df = df[df["model"].isin(sorted(df["model"].unique())[:: 32 // n_models])]
    spec = SPECS[1]  # no failed row
    a = analyse(_with_stderr(df, spec, stderr), n_boot=200)
    assert a.ci[spec].low > 0  # sharper (small-lr) models have the higher error: the interval excludes 0
    assert a.caveats[spec] == expected
    assert a.stderr[spec].tolist() == pytest.approx([stderr] * n_models)


def test_caveats_flag_an_interval_spanning_zero():
    df = study_table()
    rng = np.random.default_rng(1)
    spec = SPECS[1]
    noise = df["spec"] == spec
    df.loc[noise, "value"] = rng.normal(size=int(noise.sum()))  # unrelated to the error
    a = analyse(df, n_boot=200)
    assert a.ci[spec].low < 0 < a.ci[spec].high
    assert "interval spans 0" in a.caveats[spec]


def test_scatter_axis_names_the_quantity_and_radius(report):
    from sharpness.study.report import quantity

    assert quantity(SPECS[3]) == "average loss increase, L2 + logit norm., ρ = 0.05"
    assert quantity(SPECS[0]) == "worst-case loss increase, L∞ adaptive, ρ = 0.001"
    page = report.read_text(encoding="utf-8")
    assert "read with care" in page and "±1 standard error" in page
