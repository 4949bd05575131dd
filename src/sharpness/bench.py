r"""``sharpness bench`` / ``python -m sharpness.bench``: time sharpness measurements against their compute floor.

For each model it measures, in one process and with the same m-batches:

* the **floors**: what the definition cannot avoid, timed as plain passes of the model in its
  dtype: worst case ``n_iters`` forward+backward passes plus two forwards (the clean loss and the
  last iterate) per m-batch; average case ``n_iters + 1`` forwards per m-batch;
* each **case** (worst L-inf, worst L2, average L2, elementwise-adaptive) in each **mode**
  (``exact``, ``fast``, or ``fast:key=value,...`` to pin :class:`~sharpness.execution.options.FastOptions`),
  its ratio to its floor, its peak device memory and its value.

Timings are interleaved (every item once per repeat, in the same order) and the best of the
repeats is reported: other processes slow a repeat down, never speed one up. A warm-up round
runs first (compilation, caches). The per-pass times, achieved TFLOP/s (FLOPs counted by
``torch.utils.flop_counter``) and the operators launched per search iteration beyond the pass
locate whatever overhead a ratio shows.

Example (the CPU check, under a minute)::

    python -m sharpness.bench --model cnn --width 16 --batches 2 --m 64 --repeats 3 --json cpu.json

The GPU table (``benchmarks/gpu.sh``)::

    python -m sharpness.bench --model resnet18 vit --device cuda --batches 8 --m 128 --json gpu.json

>>> [c.spec(0.002, 0.1, 0.05, m=64, n_iters=20).norm for c in CASES.values()]
['linf', 'l2', 'l2']
>>> parse_mode("fast:stack=8,compile=graphs")
('fast:stack=8,compile=graphs', {'stack': 8, 'compile': 'graphs'})
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sharpness.bench_cli import CASE_NAMES, CLOCK_NAMES, MODELS, add_arguments
from sharpness.bench_cli import register as register  # `sharpness.bench.register`, as before the split
from sharpness.errors import SharpnessError
from sharpness.runtime import device_named
from sharpness.spec import Spec

# Default widths: those of the GPU timing table (PreAct ResNet-18 at width 64, 11.2 M parameters; the SimpleViT
# at dim 512, 12.6 M); the CPU check passes --width.
# The encoder is BERT-sized: all-MiniLM-L6-v2's shape (30522-token vocabulary, d 384, 6 layers; 22.6 M parameters).
DEFAULT_WIDTH = {"cnn": 32, "resnet18": 64, "vit": 512, "encoder": 384}
VOCAB = 30522


@dataclass(frozen=True)
class Case:
    """One benchmarked definition: Auto-PGD or random draws, elementwise-adaptive scaling."""

    case: str
    norm: str

    def spec(self, rho_linf: float, rho_l2: float, rho_avg: float, m: int, n_iters: int) -> Spec:
        rho = rho_avg if self.case == "average" else (rho_linf if self.norm == "linf" else rho_l2)
        return Spec(case=self.case, norm=self.norm, rho=rho, m=m, n_examples=m, n_iters=n_iters)  # type: ignore[arg-type]


CASES = {"worst-linf": Case("worst", "linf"), "worst-l2": Case("worst", "l2"), "average-l2": Case("average", "l2")}


class Encoder(nn.Module):
    """A BERT-shaped text classifier in plain torch: token and position embeddings, post-norm blocks, mean pooling.

    At ``dim=384`` (12 heads, feed-forward 1536, 6 layers, 30522 tokens) it has all-MiniLM-L6-v2's shape:
    22.6 M parameters, half of them the word embedding, of which an m-batch reads only the rows of its tokens.
    """

    def __init__(self, dim: int, n_classes: int, vocab: int = VOCAB, depth: int = 6, max_len: int = 512) -> None:
        super().__init__()
        if dim % 32:
            raise SharpnessError(f"--width for encoder must be a multiple of 32 (heads of 32), got {dim}")
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        layer = nn.TransformerEncoderLayer(dim, dim // 32, 4 * dim, dropout=0.0, activation="gelu", batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.tokens(ids) + self.positions.weight[: ids.shape[1]])
        return self.head(self.blocks(x).mean(dim=1))


def build_model(name: str, width: int, image: int, n_classes: int = 10) -> nn.Module:
    """The benchmarked networks: a small CNN with BatchNorm, PreAct ResNet-18, SimpleViT (from the zoo), the encoder.

    ``width`` is the CNN's first width, the ResNet's first stage width, the ViT's token
    dimension (16 heads of ``width / 16``, MLP ``2 * width``; the GPU table's ViT at 512) and the
    encoder's model dimension (heads of 32).
    """
    from sharpness.zoo.models import PreActResNet18, SimpleViT, SmallCNN

    if name == "encoder":
        return Encoder(width, n_classes)
    shape = (3, image, image)
    if name == "cnn":
        return SmallCNN(shape, n_classes, width=width, batchnorm=True)
    if name == "resnet18":
        return PreActResNet18(shape, n_classes, width=width)
    if name == "vit":
        if width % 16:
            raise SharpnessError(f"--width for vit must be a multiple of 16 (16 heads), got {width}")
        return SimpleViT(shape, n_classes, patch=4, dim=width, depth=6, heads=16, mlp_dim=2 * width)
    raise SharpnessError(f"unknown model {name!r}; choose from {list(MODELS)}")


def parse_mode(text: str) -> tuple[str, dict[str, Any]]:
    """``exact``, ``fast`` or ``fast:key=value,...`` (FastOptions fields) -> (label, overrides)."""
    from sharpness.fast import FastOptions

    name, _, rest = text.partition(":")
    if name not in ("exact", "fast") or (name == "exact" and rest):
        raise SharpnessError(f"mode must be 'exact', 'fast' or 'fast:key=value,...', got {text!r}")
    fields = {f.name: f.type for f in dataclasses.fields(FastOptions)}
    overrides: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SharpnessError(f"mode {text!r}: unknown fast option {key!r}; known: {sorted(fields)}")
        overrides[key] = int(value) if key in ("stack", "draws") else (
            float(value) if key == "memory_fraction" else value)
    FastOptions(**overrides)  # validate now, not after minutes of timing
    return text, overrides


# ------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict[str, float | None]) -> Iterator[None]:
    """Peak device memory (MiB) allocated inside the block; None off CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
assert tuple(CASES) == CASE_NAMES and tuple(CLOCKS) == CLOCK_NAMES and tuple(DEFAULT_WIDTH) == MODELS


def timed(fn: Callable[[], Any], device: torch.device, clock: str = "wall") -> tuple[float, Any, float | None]:
    """Seconds, result and peak memory of one call.

    The ``process`` clock counts the CPU time of this process only: on a CPU shared with other
    jobs it measures the work done rather than the share of the cores obtained (use one thread).
    """
    mem: dict[str, float | None] = {}
    now = CLOCKS[clock]
    synchronize(device)
    with peak_memory(device, mem):
        start = now()
        result = fn()
        synchronize(device)
        seconds = now() - start
    return seconds, result, mem["peak_mib"]


class Floors:
    """The passes a definition needs, run as plain model calls on the same m-batches."""

    def __init__(self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.model, self.batches = model, batches
        self.params = [p for p in model.parameters() if p.is_floating_point()]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            F.cross_entropy(self.model(x), y)

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        torch.autograd.grad(F.cross_entropy(self.model(x), y), self.params)

    def worst(self, n_iters: int) -> None:
        """Per m-batch: the clean forward, ``n_iters`` forward+backward passes, the last iterate's forward."""
        for x, y in self.batches:
            self.forward(x, y)
            for _ in range(n_iters):
                self.forward_backward(x, y)
            self.forward(x, y)

    def average(self, n_iters: int) -> None:
        """Per m-batch: the clean forward and one forward per draw."""
        for x, y in self.batches:
            for _ in range(n_iters + 1):
                self.forward(x, y)


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operators dispatched that compute (views excluded): on a GPU, roughly the kernels launched."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        self.n += not func.is_view
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], Any]) -> int:
    with OpCounter() as counter:
        fn()
    return counter.n


# ------------------------------------------------------------------- split
# The parts of a measurement timed apart: (part, module, attribute). "passes" is the rest of the time: the
# model's forward and backward passes, the loss, and the measurement's set-up.
SPLIT_PARTS = (
    ("write", "sharpness.space", "WeightSpace.set"),
    ("write", "sharpness.space", "WeightSpace.reset"),
    ("gather", "sharpness.space", "WeightSpace.gather"),
    ("write", "sharpness.reach", "RowSpace.set"),
    ("write", "sharpness.reach", "RowSpace.reset"),
    ("gather", "sharpness.reach", "RowSpace.gather"),
    ("update", "sharpness.space", "FlatBall.start"),
    ("update", "sharpness.space", "FlatBall.project"),
    ("update", "sharpness.space", "FlatBall.advance"),
    ("update", "sharpness.space", "FlatBall.combine"),
    ("update", "sharpness.worst_case", "pick"),
    ("noise", "sharpness.average_case", "draw"),
    ("noise", "sharpness.keyed_noise", "fill"),
)


@contextlib.contextmanager
def time_split(device: torch.device, clock: str, out: dict[str, float]) -> Iterator[None]:
    """Accumulate into ``out`` the seconds spent in each part of :data:`SPLIT_PARTS` while the block runs.

    The functions are wrapped for the block only (on CUDA each call is synchronised, which is why this is
    a separate, untimed run). The parts never call one another, so nothing is counted twice.
    """
    import importlib

    now = CLOCKS[clock]
    saved: list[tuple[Any, str, Any]] = []

    def timer(fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            synchronize(device)
            start = now()
            try:
                return fn(*args, **kwargs)
            finally:
                synchronize(device)
                out[part] = out.get(part, 0.0) + now() - start
        return timed_call

    for part, module, attribute in SPLIT_PARTS:
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for step in path:
            owner = getattr(owner, step)
        saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, timer(getattr(owner, name), part))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def split_of(run: Callable[[], Any], device: torch.device, clock: str) -> dict[str, float]:
    """One untimed run of ``run`` with its time split into passes, write, gather, update and noise (seconds)."""
    parts: dict[str, float] = {}
    with time_split(device, clock, parts):
        total, _, _ = timed(run, device, clock)
    split = {part: parts.get(part, 0.0) for part in ("write", "gather", "update", "noise")}
    return {"passes": total - sum(split.values()), **split, "total": total}


# ------------------------------------------------------------------- bench
@dataclass
class Item:
    """One timed thing: a floor or a (case, mode) measurement."""

    name: str
    run: Callable[[], Any]
    times: list[float] = dataclasses.field(default_factory=list)
    peak_mib: float | None = None
    result: Any = None
    split: dict[str, float] | None = None


def bench_model(name: str, args: argparse.Namespace, device: torch.device,
                log: Callable[[str], None]) -> dict[str, Any]:
    from sharpness.fast import options
    from sharpness.measure import measure

    torch.manual_seed(args.seed)
    width = args.width or DEFAULT_WIDTH[name]
    model = build_model(name, width, args.image).to(device).eval()
    batches = make_batches(name, args, device)
    floors = Floors(model, batches)
    items = [Item("floor worst", lambda: floors.worst(args.n_iters)),
             Item("floor average", lambda: floors.average(args.n_iters))]
    for case_name in args.cases:
        spec = CASES[case_name].spec(args.rho_linf, args.rho_l2, args.rho_avg, args.m, args.n_iters)
        for label, overrides in map(parse_mode, args.modes):
            def run(spec: Spec = spec, label: str = label, overrides: dict[str, Any] = overrides) -> Any:
                with options(**overrides):
                    return measure(model, batches, spec, mode="exact" if label == "exact" else "fast")
            items.append(Item(f"{case_name} {label}", run))
    for rep in range(args.repeats + 1):  # round 0 warms up (compilation, caches) and is not counted
        for item in items:
            seconds, result, peak = timed(item.run, device, args.clock)
            if rep:
                item.times.append(seconds)
            item.result, item.peak_mib = result, peak if item.peak_mib is None else max(item.peak_mib, peak or 0)
        log(f"  {name}: round {rep}/{args.repeats} done")
    for item in items[2:]:
        item.split = split_of(item.run, device, args.clock)
    return summarize(name, model, width, args, floors, items, device)


def make_batches(name: str, args: argparse.Namespace, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random m-batches: CIFAR-shaped images, or ``--tokens`` random token ids per sequence for the encoder."""
    g = torch.Generator().manual_seed(args.seed)

    def inputs() -> torch.Tensor:
        if name == "encoder":
            return torch.randint(0, VOCAB, (args.m, args.tokens), generator=g)
        return torch.rand(args.m, 3, args.image, args.image, generator=g)

    return [(inputs().to(device), torch.randint(0, 10, (args.m,), generator=g).to(device))
            for _ in range(args.batches)]


def summarize(name: str, model: nn.Module, width: int, args: argparse.Namespace, floors: Floors, items: list[Item],
              device: torch.device) -> dict[str, Any]:
    best = {i.name: min(i.times) for i in items}
    by_name = {i.name: i for i in items}
    x, y = floors.batches[0]
    n_pass = args.batches * args.n_iters
    t_fb = (best["floor worst"] - 2 * best["floor average"] / (args.n_iters + 1)) / n_pass
    t_f = best["floor average"] / (args.batches * (args.n_iters + 1))
    flops_fb = count_flops(lambda: floors.forward_backward(x, y))
    flops_f = count_flops(lambda: floors.forward(x, y))
    rows = []
    for item in items[2:]:
        case_name, label = item.name.split(" ", 1)
        floor = best["floor average" if case_name.startswith("average") else "floor worst"]
        res = item.result
        floor_item = by_name["floor average" if case_name.startswith("average") else "floor worst"]
        # Each round's ratio to the floor timed in the same round: robust to slow phases of a shared machine.
        paired = sorted(t / f for t, f in zip(item.times, floor_item.times))
        rows.append({"case": case_name, "mode": label, "seconds": best[item.name], "floor_s": floor,
                     "ratio": best[item.name] / floor, "paired_ratio_median": paired[len(paired) // 2],
                     "peak_mib": item.peak_mib, "value": res.value,
                     "radius": res.radius, "n_forward": res.n_forward, "n_backward": res.n_backward,
                     "path": res.details.get("fast", {}).get("path", "exact"),
                     "fallbacks": res.details.get("fast", {}).get("fallbacks", []),
                     "times": item.times, "split": item.split})
    exact = {r["case"]: r["value"] for r in rows if r["mode"] == "exact"}
    for r in rows:
        ref = exact.get(r["case"])
        r["rel_to_exact"] = None if not ref else r["value"] / ref - 1
    return {
        "model": name, "width": width, "n_params": sum(p.numel() for p in model.parameters()),
        "fwd_bwd_ms": 1e3 * t_fb, "fwd_ms": 1e3 * t_f,
        "fwd_bwd_tflops": flops_fb / t_fb / 1e12, "fwd_tflops": flops_f / t_f / 1e12,
        "floor_worst_s": best["floor worst"], "floor_average_s": best["floor average"],
        "floor_times": {i.name: i.times for i in items[:2]},
        "ops_per_iteration": search_ops(model, floors, args) if args.count_ops else None,
        "rows": rows,
    }


def search_ops(model: nn.Module, floors: Floors, args: argparse.Namespace) -> dict[str, float]:
    """Operators per Auto-PGD iteration of the exact mode, and those of one forward+backward pass."""
    from sharpness.measure import measure

    x, y = floors.batches[0]

    def ops(n_iters: int) -> int:
        spec = Spec(case="worst", norm="linf", rho=args.rho_linf, m=args.m, n_examples=args.m, n_iters=n_iters)
        return count_ops(lambda: measure(model, [(x, y)], spec))

    per_iter = (ops(20) - ops(10)) / 10  # the difference cancels the set-up and the clean pass
    fb = count_ops(lambda: floors.forward_backward(x, y))
    return {"per_iteration": per_iter, "fwd_bwd": fb, "beyond_pass": per_iter - fb}


# ---------------------------------------------------------------- report
def environment(device: torch.device) -> dict[str, Any]:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "date": datetime.date.today().isoformat(), "command": _command(),
            "threads": torch.get_num_threads(), "cpu": _cpu_name()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32_outside_fast_search"] = torch.backends.cudnn.allow_tf32
    return info


def _command() -> str:
    """The command line as typed: ``python -m sharpness.bench ...`` or ``sharpness bench ...``."""
    program = "python -m sharpness.bench" if sys.argv[0].endswith("bench.py") else Path(sys.argv[0]).name
    return " ".join([program, *map(shlex.quote, sys.argv[1:])])


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per (model, case, mode)."""
    lines = ["| model | case | mode | time | floor | ratio | paired | peak MiB | value | vs exact | path |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in report["models"]:
        for r in m["rows"]:
            peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
            rel = "-" if r["rel_to_exact"] is None else f"{100 * r['rel_to_exact']:+.3f}%"
            lines.append(f"| {m['model']} | {r['case']} | {r['mode']} | {r['seconds']:.3f} s | {r['floor_s']:.3f} s | "
                         f"{r['ratio']:.3f}x | {r['paired_ratio_median']:.3f}x | {peak} | {r['value']:.6g} | {rel} | "
                         f"{r['path']} |")
    lines += ["", "Time split of one more run of each (seconds; passes = the rest: model passes, loss, set-up):", "",
              "| model | case | mode | passes | write | gather | update | noise | total |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m in report["models"]:
        for r in m["rows"]:
            sp = r["split"]
            lines.append(f"| {m['model']} | {r['case']} | {r['mode']} | " + " | ".join(
                f"{sp[k]:.4f}" for k in ("passes", "write", "gather", "update", "noise", "total")) + " |")
    lines += ["", "| model | params | fwd+bwd / m-batch | fwd / m-batch | TFLOP/s fwd+bwd | TFLOP/s fwd "
              "| ops/iter beyond pass |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in report["models"]:
        ops = m["ops_per_iteration"]
        extra = "-" if ops is None else f"{ops['beyond_pass']:.0f} (pass: {ops['fwd_bwd']})"
        lines.append(f"| {m['model']} | {m['n_params'] / 1e6:.2f} M | {m['fwd_bwd_ms']:.2f} ms | "
                     f"{m['fwd_ms']:.2f} ms | {m['fwd_bwd_tflops']:.3f} | {m['fwd_tflops']:.3f} | {extra} |")
    return "\n".join(lines)


def vit_b16_memory(m: int = 256, card_gib: float = 80.0, precision: str = "tf32") -> dict[str, Any]:
    """Memory of the fast-mode search on a ViT-B/16-sized SimpleViT (224x224, patch 16, dim 768, depth 12).

    Bytes autograd saves in one forward are measured on the CPU for one and two images (their
    difference is one example's activations; the rest, weight copies, is paid once per row;
    TF32 stores what float32 stores, bf16 its own copies), then
    :func:`sharpness.execution.memory.estimate_bytes` adds the model and the search's flat vectors.
    """
    from sharpness.fast import FLAT_VECTORS, estimate_bytes, saved_bytes_of
    from sharpness.zoo.models import SimpleViT

    torch.manual_seed(0)
    model = SimpleViT((3, 224, 224), 1000, patch=16, dim=768, depth=12, heads=12, mlp_dim=3072).eval()
    n = sum(p.numel() for p in model.parameters())
    one, two = (saved_bytes_of(model, torch.rand(k, 3, 224, 224), torch.zeros(k, dtype=torch.long), precision)
                for k in (1, 2))
    per_example, fixed = two - one, 2 * one - two
    per_row = estimate_bytes(n, per_example, fixed, m, rows=1) - 4 * n
    rows = int((card_gib * 2**30 - 4 * n) // per_row)
    return {"n_params": n, "m": m, "precision": precision, "activation_bytes_per_example": per_example,
            "fixed_bytes_per_row": fixed,
            "flat_vectors": FLAT_VECTORS, "gib_one_row": estimate_bytes(n, per_example, fixed, m, 1) / 2**30,
            "rows_fitting": rows, "card_gib": card_gib}


# -------------------------------------------------------------------- CLI
def run(args: argparse.Namespace) -> int:
    for value, what in ((args.batches, "--batches"), (args.m, "--m"), (args.n_iters, "--n-iters"),
                        (args.repeats, "--repeats")):
        if value < 1:
            raise SharpnessError(f"{what} must be at least 1, got {value}")
    for mode in args.modes:
        parse_mode(mode)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_named(args.device, "--device")
    # Floors and the exact mode in true float32, as the reference GPU table was measured (cuDNN allows TF32 by
    # default).
    # The fast mode turns TF32 on for its own search passes only.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    report: dict[str, Any] = {"environment": environment(device), "settings": _settings(args), "models": []}

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    for name in args.model:
        report["models"].append(bench_model(name, args, device, log))
        _write(args.json, report)  # partial results survive a later failure or timeout
    if args.vit_b16_memory:
        report["vit_b16_memory"] = vit_b16_memory()
    print(table(report))
    if "vit_b16_memory" in report:
        est = report["vit_b16_memory"]
        print(f"\nViT-B/16 size ({est['n_params'] / 1e6:.1f} M params), m={est['m']}: {est['gib_one_row']:.1f} GiB "
              f"for one m-batch per pass; {est['rows_fitting']} m-batches per pass fit in {est['card_gib']:.0f} GiB")
    _write(args.json, report)
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sharpness.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SharpnessError as e:
        print(f"sharpness bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
