"""The average case in draw stream 1 and stream 2, interleaved in one process, each against its floor.

On a shared CPU the machine's speed drifts between runs by more than the change being measured, so a
before/after comparison of two benchmark runs says little. This script times, round after round and in
turn, the floor (the clean forward and one forward per draw, per m-batch), the average case as it runs
now (stream 2 on a model with an embedding: each m-batch draws only the rows it reads) and the same
measurement with the embeddings' rows left unrecognised (stream 1: every draw one sequential draw over all
22.6 M coordinates, as before stream 2), and prints each round's ratios to the floor of the same round.
Example (the numbers in ``RESULTS.md``)::

    python benchmarks/draw_streams.py --threads 1 --repeats 5 --json benchmarks/results/cpu-encoder-draw-streams.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from collections.abc import Iterator
from typing import Any

import torch

from sharpness import Spec, measure, reach
from sharpness.bench import VOCAB, Floors, build_model, timed


@contextlib.contextmanager
def sequential_stream() -> Iterator[None]:
    """Measure as if no embedding qualified: every draw is one sequential draw (stream 1)."""
    original = reach.embeddings
    reach.embeddings = lambda model, space: {}  # type: ignore[assignment]
    try:
        yield
    finally:
        reach.embeddings = original


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--repeats", type=int, default=5, help="counted rounds after one warm-up round (default: 5)")
    p.add_argument("--batches", type=int, default=2, help="m-batches (default: 2)")
    p.add_argument("--m", type=int, default=16, help="sequences per m-batch (default: 16)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per sequence (default: 64)")
    p.add_argument("--n-iters", type=int, default=6, help="draws per m-batch (default: 6)")
    p.add_argument("--rho", type=float, default=0.05, help="radius of the L2 average case (default: 0.05)")
    p.add_argument("--clock", choices=["process", "wall"], default="process", help="timer (default: process)")
    p.add_argument("--json", help="write every time here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("encoder", 384, 32).eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, VOCAB, (args.m, args.tokens), generator=g), torch.randint(0, 10, (args.m,),
                                                                                          generator=g))
               for _ in range(args.batches)]
    spec = Spec(case="average", norm="l2", rho=args.rho, m=args.m, n_iters=args.n_iters)
    floors = Floors(model, batches)

    def stream_1() -> Any:
        with sequential_stream():
            return measure(model, batches, spec)

    items = {"floor": lambda: floors.average(args.n_iters), "stream 2": lambda: measure(model, batches, spec),
             "stream 1": stream_1}
    times: dict[str, list[float]] = {k: [] for k in items}
    results: dict[str, Any] = {}
    device = torch.device("cpu")
    for rep in range(args.repeats + 1):
        for name, run in items.items():
            seconds, results[name], _ = timed(run, device, args.clock)
            if rep:
                times[name].append(seconds)
        print(f"round {rep}/{args.repeats} done", flush=True)
    rows = {}
    for name in ("stream 1", "stream 2"):
        paired = [t / f for t, f in zip(times[name], times["floor"])]
        rows[name] = {"paired_median": statistics.median(paired), "best_over_best": min(times[name]) / min(
            times["floor"]), "value": results[name].value, "draw_stream": results[name].details["draw_stream"]}
    print("| stream | ratio, paired median | ratio, best / best | value |\n| --- | --- | --- | --- |")
    for r in rows.values():
        print(f"| {r['draw_stream']} | {r['paired_median']:.3f}x | {r['best_over_best']:.3f}x | {r['value']:.6g} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "torch": torch.__version__, "times": times, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
