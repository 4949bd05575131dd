"""The ``sharpness bench`` options, apart from the benchmark so that the command line builds without torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from sharpness.lazy import command

MODELS = ("cnn", "resnet18", "vit", "encoder")
CASE_NAMES = ("worst-linf", "worst-l2", "average-l2")
CLOCK_NAMES = ("wall", "process")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", nargs="+", default=["cnn"], choices=MODELS, help="models to benchmark (default: cnn)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--width", type=int, default=0,
                   help="cnn width / resnet18 stage-1 width / vit dimension / encoder dimension "
                        "(default: 32 / 64 / 512 / 384)")
    p.add_argument("--image", type=int, default=32, help="image side, CIFAR-shaped inputs (default: 32)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per sequence for the encoder (default: 64)")
    p.add_argument("--batches", type=int, default=2, help="m-batches (default: 2)")
    p.add_argument("--m", type=int, default=64, help="examples per m-batch (default: 64)")
    p.add_argument("--n-iters", type=int, default=20, help="iterations or draws per m-batch (default: 20)")
    p.add_argument("--cases", nargs="+", default=list(CASE_NAMES), choices=list(CASE_NAMES), help="definitions to time")
    p.add_argument("--modes", nargs="+", default=["exact", "fast"], metavar="MODE",
                   help="exact, fast, or fast:key=value,... pinning FastOptions, e.g. fast:stack=8,compile=graphs")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up; best kept (default: 3)")
    p.add_argument("--rho-linf", type=float, default=0.002, help="worst-linf radius (default: 0.002)")
    p.add_argument("--rho-l2", type=float, default=0.1, help="worst-l2 radius (default: 0.1)")
    p.add_argument("--rho-avg", type=float, default=0.05, help="average-l2 radius (default: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--clock", default="wall", choices=list(CLOCK_NAMES),
                   help="wall time, or this process's CPU time (robust on a shared CPU; with --threads 1)")
    p.add_argument("--tf32", action="store_true",
                   help="let floors and the exact mode use TF32 on CUDA (default: off, true float32)")
    p.add_argument("--count-ops", action="store_true", help="count operators per search iteration (slow on GPU)")
    p.add_argument("--vit-b16-memory", action="store_true",
                   help="also estimate the fast mode's memory for a ViT-B/16-sized model at m=256 (CPU, ~1 min)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write everything measured to this JSON file")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="time sharpness measurements against their compute floor",
        description=("Benchmark the exact and fast modes of measure() on a small CNN, PreAct ResNet-18, a "
                     "SimpleViT (random CIFAR-shaped m-batches) and a BERT-sized encoder (random token ids), all with "
                     "random weights: time of each case, its ratio "
                     "to the passes the definition needs (the floor), peak memory and values. Timings are "
                     "interleaved, best of --repeats; each round's ratio to its floor is reported too, and "
                     "--split times the parts of the search apart (passes, update, noise)."),
        epilog="example: sharpness bench --model cnn --width 16 --batches 2 --m 64 --json cpu.json")
    add_arguments(p)
    p.set_defaults(func=command("sharpness.bench:run"))

