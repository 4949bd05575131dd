"""What geodesic sharpness costs beyond flat adaptive sharpness, on a transformer encoder.

One process, interleaved rounds (flat, inv, mix once per round, in that order), the same model and
m-batches for all three. A measurement's time is its clean forwards plus ``n_iters`` Auto-PGD
iterations; the iteration cost is isolated by subtracting the time of a 1-iteration measurement of
the same definition measured in the same round. Reported: per-iteration time of each geometry and
its ratio to flat (median over rounds of each round's ratio), and the values.

    python benchmarks/geodesic_cost.py --threads 1 --clock process
    python benchmarks/geodesic_cost.py --d 384 --layers 6 --heads 12 --ff 1536 --vocab 30522 --seq 64 --m 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sharpness import Spec, measure
from sharpness.runtime import torch_threads

GEOMETRIES = ("flat", "inv", "mix")


class Encoder(nn.Module):
    """Token classifier: embedding, ``nn.TransformerEncoder`` (``nn.MultiheadAttention`` inside), mean pool."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, ff: int, n_classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


def clock(kind: str) -> float:
    return time.process_time() if kind == "process" else time.perf_counter()


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Encoder(args.vocab, args.d, args.layers, args.heads, args.ff)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, args.vocab, (args.m, args.seq), generator=g), torch.randint(0, 4, (args.m,),
                                                                                             generator=g))
               for _ in range(args.batches)]

    def spec(geometry: str, n_iters: int) -> Spec:
        return Spec(case="worst", norm="l2", rho=args.rho, n_iters=n_iters, geometry=geometry)

    def timed(s: Spec) -> tuple[float, float]:
        start = clock(args.clock)
        value = measure(model, batches, s).value
        return clock(args.clock) - start, value

    per_iter: dict[str, list[float]] = {k: [] for k in GEOMETRIES}
    values: dict[str, float] = {}
    for s in (spec(k, n) for k in GEOMETRIES for n in (1, args.n_iters)):  # warm-up
        timed(s)
    for _ in range(args.repeats):
        for k in GEOMETRIES:
            t_full, values[k] = timed(spec(k, args.n_iters))
            t_one, _ = timed(spec(k, 1))
            per_iter[k].append((t_full - t_one) / (args.n_iters - 1) / args.batches)
    ratios = {k: statistics.median(a / b for a, b in zip(per_iter[k], per_iter["flat"])) for k in GEOMETRIES[1:]}
    return {
        "model": {"vocab": args.vocab, "d": args.d, "layers": args.layers, "heads": args.heads, "ff": args.ff,
                  "params": sum(p.numel() for p in model.parameters())},
        "data": {"batches": args.batches, "m": args.m, "seq": args.seq},
        "settings": {"n_iters": args.n_iters, "repeats": args.repeats, "threads": args.threads, "clock": args.clock,
                     "torch": torch.__version__},
        "seconds_per_iteration": {k: min(v) for k, v in per_iter.items()},
        "ratio_to_flat": ratios,
        "values": values,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ff", type=int, default=1024)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--n-iters", type=int, default=6)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "process"], default="process")
    p.add_argument("--json", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        report = run(args)
    for k in GEOMETRIES:
        ratio = "" if k == "flat" else f"  {report['ratio_to_flat'][k]:.3f}x flat"
        print(f"{k:>5}: {1e3 * report['seconds_per_iteration'][k]:8.2f} ms/iteration{ratio}  "
              f"value {report['values'][k]:.4g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
