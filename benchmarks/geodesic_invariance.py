"""How invariant geodesic sharpness is in practice: the pretrained all-MiniLM-L6-v2, float32 and float64.

Every head's query-key and value-output blocks are reparametrised by ``A = a * N(0, 1)`` (one draw per
head and block, ``(G, H) -> (G A^-1, H A^T)``: the same function); the script reports, for each scale
``a``, the relative change of flat adaptive and of geodesic (inv, mix) worst-case L2 sharpness, and the
relative change of the logits themselves (the floor set by the dtype).

    python benchmarks/geodesic_invariance.py --threads 1 --json runs/invariance.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Sequence
from typing import Any

import torch

from sharpness import Spec, measure
from sharpness.runtime import torch_threads
from sharpness.symmetry import find_blocks, reparametrised


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sharpness.zoo.adapters import MiniLMClassifier

    torch.manual_seed(0)
    base = MiniLMClassifier(n_classes=5, dropout=0.0).eval()
    vocab = base.encoder.config.vocab_size
    g = torch.Generator().manual_seed(1)
    batches = [({"input_ids": torch.randint(1000, vocab, (args.m, args.seq), generator=g),
                 "attention_mask": torch.ones(args.m, args.seq, dtype=torch.long)},
                torch.randint(0, 5, (args.m,), generator=g)) for _ in range(args.batches)]
    specs = {k: Spec(case="worst", norm="l2", rho=args.rho, n_iters=args.n_iters, geometry=k,
                     params=args.params) for k in ("flat", "inv", "mix")}
    report: dict[str, Any] = {"model": "all-MiniLM-L6-v2 + linear head", "blocks": len(find_blocks(base)),
                              "settings": vars(args), "dtypes": {}}
    for dtype in (getattr(torch, name) for name in args.dtypes):
        model = copy.deepcopy(base).to(dtype)
        data = [({k: v for k, v in x.items()}, y) for x, y in batches]
        ref = {k: measure(model, data, s).value for k, s in specs.items()}
        with torch.no_grad():
            logits = model(**data[0][0])
        rows = []
        for scale in args.scales:
            other = reparametrised(model, scale, seed=2)
            with torch.no_grad():
                change = float((other(**data[0][0]) - logits).abs().max() / logits.abs().max())
            values = {k: measure(other, data, s).value for k, s in specs.items()}
            rows.append({"scale": scale, "logits_rel_change": change,
                         **{f"{k}_rel_change": abs(values[k] / ref[k] - 1) for k in specs}})
            print(f"{dtype!s:>14} a={scale:<6g} logits {change:.1e}  "
                  + "  ".join(f"{k} {abs(values[k] / ref[k] - 1):.1e}" for k in specs))
        report["dtypes"][str(dtype)] = {"values": ref, "rows": rows}
    if len(report["dtypes"]) == 2:
        f32, f64 = (report["dtypes"][str(t)]["values"] for t in (torch.float32, torch.float64))
        report["float32_vs_float64"] = {k: abs(f32[k] / f64[k] - 1) for k in f32}
        print("unreparametrised, float32 vs float64: "
              + "  ".join(f"{k} {v:.1e}" for k, v in report["float32_vs_float64"].items()))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=8)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--batches", type=int, default=1)
    p.add_argument("--n-iters", type=int, default=8)
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    p.add_argument("--params", default=None, help="regular expression of the perturbed parameters (default: all)")
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with torch_threads(args.threads):
        report = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
