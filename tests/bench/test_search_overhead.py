"""``benchmarks/search_overhead.py``: the parts of an Auto-PGD iteration, timed apart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "search_overhead.py"


def test_prints_one_row_per_norm_whose_overhead_is_the_sum_of_its_parts() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--width", "8", "--m", "8", "--n-iters", "4", "--repeats", "2"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    rows = [line for line in out.splitlines() if re.match(r"\| (linf|l2) \|", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["linf", "l2"]
    for row in rows:
        update, write, gather, one_pass, overhead = (float(re.sub(r"[^\d.]", "", c)) for c in row.split("|")[2:7])
        assert min(update, write, gather, one_pass) > 0
        # the cells are rounded: parts to 0.01 ms, the pass to 0.1 ms, the overhead to 0.1%
        parts = update + write + gather
        low, high = (parts - 0.015) / (one_pass + 0.05), (parts + 0.015) / (one_pass - 0.05)
        assert low - 0.0005 <= overhead / 100 <= high + 0.0005
