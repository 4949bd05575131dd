"""Training a zoo on a real local Ray cluster of two workers: the same zoo and study as locally, from
worker processes, surviving a killed worker and a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sharpness.study import load, run
from sharpness.zoo import grid

ray = pytest.importorskip("ray", reason="pip install 'sharpness[ray]'")


def tiny_grid(tmp_path: Path, epochs: int = 1, n_train: int = 96, seeds: tuple[int, ...] = (0,)) -> Path:
    cfg = grid.load_config("mnist1d", reduced=True)
    cfg["data"]["options"] = {"n_train": n_train, "n_test": 48}
    cfg["hp"].update(epochs=epochs, batch_size=32)
    cfg["axes"] = {"arch": ["mlp", "cnn1d"]}
    cfg["seeds"] = list(seeds)
    cfg["cpu_threads"] = 1  # the same threads in the driver and in the workers: the same arithmetic
    cfg["resources"] = {"num_cpus": 1, "max_retries": 2}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def cluster() -> object:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_config_zoo_trained_and_measured_on_ray_gives_the_local_table(tmp_path: Path, cluster: object) -> None:
    study = textwrap_study(tiny_grid(tmp_path))
    local = run(study, out=tmp_path / "local", progress=False)
    remote = run(study, out=tmp_path / "ray", backend="ray", progress=False)
    assert local.ok and remote.ok and remote.total == 4
    a, b = load(tmp_path / "local"), load(tmp_path / "ray")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"), check_exact=True)
    cards = [json.loads(p.read_text()) for p in (tmp_path / "ray").rglob("card.json")]
    assert len(cards) == 2
    workers = {c["provenance"]["pid"] for c in cards}
    assert os.getpid() not in workers  # trained by worker processes, not by the driver
    here = {json.loads(p.read_text())["provenance"]["pid"] for p in (tmp_path / "local").rglob("card.json")}
    assert here == {os.getpid()}


def textwrap_study(grid_path: Path) -> str:
    return (f"zoo: {{config: {grid_path}}}\n"
            "eval: {n_examples: 32, m: 32, threads: 1}\n"
            "specs:\n  - worst-linf-elementwise:rho=0.01,n_iters=3\n  - average-l2-elementwise:rho=0.05,n_iters=4\n"
            "resources: {num_cpus: 1, max_retries: 2}\n")


def training_workers() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::train_model"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_worker_killed_while_training_is_retried(tmp_path: Path, cluster: object) -> None:
    path = tiny_grid(tmp_path, epochs=40, n_train=512)
    folders: list[Path] = []
    thread = threading.Thread(target=lambda: folders.extend(grid.train_grid(path, tmp_path / "zoo", progress=False,
                                                                            backend="ray")))
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        pids = training_workers()
        if pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "no training worker seen"
    assert len(folders) == 2 and all((f / "card.json").is_file() for f in folders)
    assert not (tmp_path / "zoo" / "failures.json").exists()
    pids = {json.loads((f / "card.json").read_text())["provenance"]["pid"] for f in folders}
    assert killed not in pids  # the killed worker's model was trained again by another


DRIVER = """
import sys
from sharpness.zoo.grid import train_grid
train_grid(sys.argv[1], sys.argv[2], progress=False, backend="ray")
"""


def test_a_killed_driver_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tiny_grid(tmp_path, epochs=6, n_train=256, seeds=(0, 1, 2))
    zoo = tmp_path / "zoo"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), str(zoo)], start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and len(list(zoo.glob("*/card.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
    proc.wait()
    done_before = {p.parent.name for p in zoo.glob("*/card.json")}
    assert 0 < len(done_before) < 6
    for folder in (p for p in zoo.iterdir() if not p.name.startswith(".") and p.is_dir()):
        assert (folder / "card.json").is_file() and (folder / "model.safetensors").is_file()  # only complete models
    before = {n: (zoo / n / "card.json").read_text() for n in done_before}
    subprocess.run([sys.executable, "-c", DRIVER, str(path), str(zoo)], check=True, timeout=300)
    folders = sorted(p.parent.name for p in zoo.glob("*/card.json"))
    assert len(folders) == len(set(folders)) == 6
    assert all((zoo / n / "card.json").read_text() == text for n, text in before.items())  # not trained again
