"""Study configs: grids expand as documented, and every mistake is reported with its line and key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sharpness import SharpnessError, Spec
from sharpness.study.config import expand_spec, load_config

BASE = "zoo:\n  folder: zoo\n"


@pytest.mark.parametrize(
    ("entry", "defaults", "expected"),
    [
        ("worst-linf:rho=0.002", {}, ["worst-linf-elementwise:rho=0.002"]),
        ("worst-l2:rho=[0.05,0.1]", {}, ["worst-l2-elementwise:rho=0.05", "worst-l2-elementwise:rho=0.1"]),
        # grids are a Cartesian product, first axis slowest; eval defaults fill unset fields only
        (
            "average-l2-standard:rho=[1,2],n_iters=[4, 8]",
            {"m": 64, "n_iters": 2},
            [f"average-l2-standard:rho={r},m=64,n_iters={n}" for r in ("1.0", "2.0") for n in (4, 8)],
        ),
        # brackets and commas inside a quoted value are not grid syntax
        ('worst-l2:rho=0.1,params="^(a|b)\\\\.[01],x"', {},
         ['worst-l2-elementwise:rho=0.1,params="^(a|b)\\\\.[01],x"']),
        (
            {"spec": "average-linf-elementwise:logit_norm=true", "rho": [0.001, "1e-2"], "n_examples": 256},
            {"m": 64},
            ["average-linf-elementwise:rho=0.001,logit_norm=true,m=64,n_examples=256",
             "average-linf-elementwise:rho=0.01,logit_norm=true,m=64,n_examples=256"],
        ),
        ({"spec": "worst-linf-filterwise", "rho": 0.5, "antithetic": False}, {}, ["worst-linf-filterwise:rho=0.5"]),
    ],
)
def test_expand_spec(entry: str | dict, defaults: dict, expected: list[str]) -> None:
    specs = expand_spec(entry, defaults)
    assert [str(s) for s in specs] == expected
    assert all(Spec.parse(str(s)) == s for s in specs)


def test_full_config(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "my-study.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent("""\
        zoo:
          folder: ../zoo
        eval: {split: test, n: 500, device: cpu, threads: 1, n_examples: 256, m: 64}
        specs:
          - worst-linf:rho=[0.001,0.002]
          - spec: average-l2-standard
            rho: 0.01
            m: 128
        targets: [test_err, ood, lr]
        resources: {num_cpus: 2, num_gpus: 0.5, max_retries: 1}
        report: {color_by: lr}
        """))
    cfg = load_config(path)
    assert cfg.name == "my-study" and cfg.text == path.read_text()
    assert cfg.zoo.kind == "folder" and cfg.zoo.path.resolve() == (tmp_path / "zoo").resolve()
    assert (cfg.eval.split, cfg.eval.n, cfg.eval.device, cfg.eval.threads) == ("test", 500, "cpu", 1)
    assert cfg.eval.mode == "exact"  # the default
    assert [str(s) for s in cfg.specs] == [
        "worst-linf-elementwise:rho=0.001,m=64,n_examples=256",
        "worst-linf-elementwise:rho=0.002,m=64,n_examples=256",
        "average-l2-standard:rho=0.01,n_examples=256",
    ]
    assert cfg.targets == ("test_err", "ood", "lr") and cfg.color_by == "lr"
    assert (cfg.resources.num_cpus, cfg.resources.num_gpus, cfg.resources.max_retries) == (2.0, 0.5, 1)


@pytest.mark.parametrize(
    ("zoo", "kind", "tail"),
    [
        ("config: mnist1d", "config", "sharpness/zoo/configs/mnist1d.yaml"),  # a packaged zoo config
        ("config: grids/mine.yaml\n  out: /tmp/z", "config", "grids/mine.yaml"),
        ("csv: refs.csv\n  factory: mypkg.models:build", "csv", "refs.csv"),
    ],
)
def test_zoo_sources(zoo: str, kind: str, tail: str) -> None:
    cfg = load_config(f"zoo:\n  {zoo}\nspecs: [worst-l2:rho=1]\n")
    assert cfg.zoo.kind == kind and cfg.zoo.path.as_posix().endswith(tail)
    assert cfg.name == "study"


@pytest.mark.parametrize(
    ("text", "line", "where", "message"),
    [
        ("zoo: {folder: a, csv: b}\nspecs: [worst-l2:rho=1]", 1, "zoo", "exactly one of"),
        (BASE + "specs:\n  - worst-l2:rho=1\n  - worst-linf:rho=-2\n", 5, "specs[1]", "rho must be > 0"),
        (BASE + "specs:\n  - worst-l2:rho=[1, 2]\n  - worst-l2:rho=2.0\n", 5, "specs[1]", "already given by specs[0]"),
        (BASE + "specs:\n  - worst-l2:rho=[1,2\n", 4, "specs[0]", "unclosed '['"),
        (BASE + "specs:\n  - worst-l2:rho=[1,1]\n", 4, "specs[0]", "repeated value"),
        (BASE + "specs:\n  - spec: worst-l2\n    rho: 1\n    case: average\n", 4, "specs[0]", "belongs in the head"),
        (BASE + "specs:\n  - worst-l2:rho=1,bogus=3\n", 4, "specs[0]", "unknown spec key 'bogus'"),
        (BASE + "eval:\n  split: train\n  m: 0\nspecs: [worst-l2:rho=1]", 5, "eval.m", "m must be >= 1"),
        (BASE + "eval:\n  n_examples: 100\nspecs: [worst-l2:rho=1]", 4, "eval.n_examples", "multiple of m"),
        (BASE + "eval:\n  split: valid\nspecs: [worst-l2:rho=1]", 4, "eval.split", "'valid'"),
        (BASE + "eval:\n  n: -3\nspecs: [worst-l2:rho=1]", 4, "eval.n", "positive integer"),
        (BASE + "eval:\n  threads: 0\nspecs: [worst-l2:rho=1]", 4, "eval.threads", "positive integer"),
        (BASE + "eval:\n  mode: turbo\nspecs: [worst-l2:rho=1]", 4, "eval.mode", "expected one of ['exact', 'fast']"),
        (BASE + "specs: [worst-l2:rho=1]\nresources:\n  num_gpus: -1\n", 5, "resources.num_gpus", ">= 0"),
        (BASE + "specs: [worst-l2:rho=1]\nreport:\n  colour_by: lr\n", 5, "report.colour_by", "unknown key"),
        (BASE + "specs: []\n", 3, "specs", "non-empty list"),
        (BASE + "specs: [worst-l2:rho=1]\ntargets: [test_err, 3]\n", 4, "targets[1]", "column name"),
        ("zoo:\n  csv: a.csv\nspecs: [worst-l2:rho=1]", 1, "zoo", "'factory' goes with 'csv'"),
        ("zoo:\n  csv: a.csv\n  factory: nocolon\nspecs: [worst-l2:rho=1]", 3, "zoo.factory", "module:function"),
        ("zoo:\n  folder: a\n  folder: b\nspecs: [worst-l2:rho=1]", 3, "", "given twice"),
        ("specs: [worst-l2:rho=1]\n", 1, "top level", "needs a 'zoo' section"),
        (BASE + "specs: [worst-l2:rho=1]\nzooo: 1\n", 4, "zooo", "unknown key"),
        (BASE + "specs: [worst-l2:rho=1\n", 3, "", "not valid YAML"),
    ],
)
def test_errors_name_line_and_key(text: str, line: int, where: str, message: str) -> None:
    with pytest.raises(SharpnessError) as info:
        load_config(text, source="s.yaml")
    text_of_error = str(info.value)
    assert text_of_error.startswith("s.yaml"), text_of_error
    assert message in text_of_error
    if "YAML" not in message:
        assert f"line {line}" in text_of_error
        assert where in text_of_error


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_eval_mode(mode: str) -> None:
    cfg = load_config(f"{BASE}eval: {{mode: {mode}, m: 64}}\nspecs: [worst-l2:rho=1]\n")
    assert cfg.eval.mode == mode and str(cfg.specs[0]) == "worst-l2-elementwise:rho=1.0,m=64"  # not a Spec field


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SharpnessError, match=re.escape(str(tmp_path / "nope.yaml"))):
        load_config(tmp_path / "nope.yaml")
