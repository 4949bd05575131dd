"""Bad input at the command line: one line naming the option or file, exit status 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sharpness.zoo import build, save


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zoo") / "mlp"
    arch = {"name": "mlp", "kwargs": {"in_shape": [1, 40], "n_classes": 10, "hidden": [8]}}
    save(folder, build(arch), {"arch": arch, "hp": {}, "data": {"name": "mnist1d", "options": {"n_train": 256}}})
    return folder


def sharpness(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sharpness.cli", *argv], capture_output=True, text=True,
                          timeout=300)


def damaged(tmp_path: Path, model_folder: Path, what: str) -> Path:
    folder = tmp_path / what
    folder.mkdir()
    for f in model_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    if what == "truncated-card":
        (folder / "card.json").write_text((model_folder / "card.json").read_text()[:20])
    else:  # a torch.save file posing as safetensors
        torch.save({"w": torch.zeros(3)}, folder / "model.safetensors")
    return folder


CASES = [  # (arguments after the model folder, text the error contains)
    (["--threads", "0"], "--threads: expected >= 1, got 0"),
    (["--threads", "-3"], "--threads: expected >= 1, got -3"),
    (["--device", "gpu0"], "--device: 'gpu0' is not a torch device"),
    (["--json", "/missing/dir/out.json"], "--json: the folder '/missing/dir' does not exist"),
    (["--spec", 'worst-l2:rho=0.1,params="abc'], "unterminated quote in the value of params"),
]
if not torch.cuda.is_available():
    CASES.append((["--device", "cuda"], "--device: 'cuda' is not available"))


@pytest.mark.parametrize(("args", "needle"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_options_fail_before_any_work(model_folder: Path, args: list[str], needle: str) -> None:
    spec = [] if "--spec" in args else ["--spec", "worst-linf:rho=0.01,n_iters=2,m=32,n_examples=32"]
    done = sharpness("measure", str(model_folder), *spec, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and needle in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""  # not one measurement started


@pytest.mark.parametrize(("what", "needle"), [("truncated-card", "card.json' is not valid JSON"),
                                              ("fake-weights", "model.safetensors' is not a safetensors file")])
def test_damaged_model_folders_are_named(tmp_path: Path, model_folder: Path, what: str, needle: str) -> None:
    folder = damaged(tmp_path, model_folder, what)
    done = sharpness("measure", str(folder), "--spec", "worst-linf:rho=0.01,n_iters=2,m=32,n_examples=32")
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr
    assert str(folder) in done.stderr


def test_results_are_written_when_all_is_well(tmp_path: Path, model_folder: Path) -> None:
    out = tmp_path / "out.json"
    done = sharpness("measure", str(model_folder), "--spec", "worst-linf:rho=0.01,n_iters=2,m=32,n_examples=32",
                     "--threads", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())[0]["spec_str"].startswith("worst-linf")


def test_ctrl_c_keeps_the_finished_definitions_and_exits_130(tmp_path: Path, model_folder: Path) -> None:
    import signal

    out = tmp_path / "out.json"
    proc = subprocess.Popen([sys.executable, "-m", "sharpness.cli", "measure", str(model_folder),
                             "--spec", "worst-linf:rho=0.01,n_iters=2,m=32,n_examples=32",
                             "--spec", "worst-linf:rho=0.01,n_iters=100000,m=32,n_examples=32",
                             "--threads", "1", "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # the header
    first = proc.stdout.readline()  # the first definition's row: the second is running now
    assert first.startswith("worst-linf")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert proc.returncode == 130 and "interrupted after 1 of 2 definitions" in err and "Traceback" not in err
    assert len(json.loads(out.read_text())) == 1
