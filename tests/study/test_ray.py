"""The Ray backend on a real local cluster of two workers: the same table as in-process, dead workers retried."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sharpness.study import load, run

ray = pytest.importorskip("ray")

# A factory whose worker process dies the first time it builds model "fragile".
FACTORY = '''
import os
import torch

def build(row):
    marker = os.path.join(os.path.dirname(__file__), "died-once")
    if row["model"] == "fragile" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    torch.manual_seed(int(row["seed"]))
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    return model, {"id": row["model"], "hp": {"seed": int(row["seed"])}, "metrics": {}}, (x, (x[:, 0] > 0).long())
'''


def test_ray_matches_local_and_survives_a_dead_worker(tiny_zoo: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = textwrap.dedent(f"""\
        zoo: {{folder: {tiny_zoo[1]}}}
        eval: {{n_examples: 128, m: 64, threads: 1}}
        specs:
          - worst-linf-elementwise:rho=0.01,n_iters=5
          - average-l2-elementwise:rho=[0.05,0.1],n_iters=4
        resources: {{num_cpus: 1, max_retries: 2}}
        """)
    local = run(config, out=tmp_path / "local", progress=False)
    (tmp_path / "study_ray_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    csv_config = textwrap.dedent("""\
        zoo: {csv: refs.csv, factory: "study_ray_factory:build"}
        eval: {n_examples: 32, m: 32, threads: 1}
        specs: [worst-l2-standard:rho=0.1]
        resources: {num_cpus: 1, max_retries: 1}
        """)
    (tmp_path / "refs.csv").write_text("model,seed\nsteady,0\nfragile,1\n")
    (tmp_path / "csv.yaml").write_text(csv_config)
    # Workers find the factory module through their PYTHONPATH.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path)}})
    try:
        remote = run(config, out=tmp_path / "ray", backend="ray", progress=False)
        retried = run(tmp_path / "csv.yaml", out=tmp_path / "csv", backend="ray", progress=False)
    finally:
        ray.shutdown()
    assert local.ok and remote.ok and (remote.total, remote.computed) == (9, 9)
    a, b = load(tmp_path / "local"), load(tmp_path / "ray")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"), check_exact=False, rtol=1e-9)
    assert retried.ok and (tmp_path / "died-once").exists()  # the worker died once and the task was retried
    assert set(load(tmp_path / "csv")["status"]) == {"done"}
