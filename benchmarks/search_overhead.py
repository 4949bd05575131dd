"""The worst case's own work per Auto-PGD iteration, timed apart from the model's pass.

On a CPU shared with other jobs, a whole measurement's ratio to its floor moves by 5-10% from one
round to the next: more than the overhead it is meant to show. This script times the parts of an
iteration separately, in one process, each as the best of many repeats:

* ``update``: Auto-PGD's arithmetic on the flat vectors (step, projection, momentum, best point,
  step-size checkpoints), with a probe whose pass is free (a fixed gradient, a cycling loss);
* ``write``: ``WeightSpace.set``, the point :math:`w_0 + c \\odot u` written into the parameters;
* ``gather``: ``WeightSpace.gather``, the parameters' gradients as one flat :math:`c \\odot \\nabla_w L`;
* ``pass``: one forward+backward of the model on one m-batch, the floor's unit.

The overhead of an iteration is ``(update + write + gather) / pass``. Example (the CPU numbers in
``RESULTS.md``)::

    python benchmarks/search_overhead.py --model cnn --m 64 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sharpness import Spec
from sharpness.bench import build_model
from sharpness.objective import Batch
from sharpness.space import Passes, Probe, WeightSpace
from sharpness.worst_case import worst_case


class FreePass(Probe):
    """A probe whose pass costs nothing: a fixed gradient and a loss that cycles (so best points change)."""

    def __init__(self, space: WeightSpace) -> None:
        self.space, self.passes = space, Passes()
        self.gradient = torch.randn(space.numel, generator=torch.Generator().manual_seed(1)).to(space.w0)
        self.calls = 0

    def _loss(self) -> torch.Tensor:
        self.calls += 1
        return torch.tensor(float(self.calls % 7), dtype=self.space.w0.dtype)

    def value(self, u: torch.Tensor, batch: Batch, with_error: bool) -> tuple[torch.Tensor, None]:
        return self._loss(), None

    def value_and_grad(self, u: torch.Tensor, batch: Batch,
                       with_error: bool) -> tuple[torch.Tensor, None, torch.Tensor]:
        return self._loss(), None, self.gradient


def best_ms(fn: Callable[[], object], repeats: int, per_call: int = 1) -> float:
    """Best process CPU time of ``fn`` over ``repeats`` calls, in ms per unit of ``per_call``."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times) / per_call * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn", choices=["cnn", "resnet18", "vit"])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--m", type=int, default=64, help="examples per m-batch (default: 64)")
    parser.add_argument("--n-iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build_model(args.model, args.width, 32).eval()
    params = [p for p in model.parameters()]
    space = WeightSpace(params, [n for n, _ in model.named_parameters()], "elementwise", 0.0, {})
    x, y = torch.randn(args.m, 3, 32, 32), torch.randint(0, 10, (args.m,))
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    u = torch.rand(space.numel) * 1e-3

    pass_ms = best_ms(lambda: torch.autograd.grad(F.cross_entropy(model(x), y), params), args.repeats)
    write_ms = best_ms(lambda: space.set(u), args.repeats * 10)
    gather_ms = best_ms(lambda: space.gather(grads), args.repeats * 10)
    space.reset()
    print(f"{args.model}: {space.numel / 1e6:.2f} M parameters, m = {args.m}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}")
    print("| norm | update | write | gather | pass | overhead |")
    print("| --- | --- | --- | --- | --- | --- |")
    for norm, rho in (("linf", 0.002), ("l2", 0.1)):
        search = functools.partial(worst_case, FreePass(space), Batch((), {}, y),
                                   Spec(case="worst", norm=norm, rho=rho, n_iters=args.n_iters))
        update_ms = best_ms(lambda: search(torch.Generator().manual_seed(0), False),  # noqa: B023 (called at once)
                            args.repeats, per_call=args.n_iters)
        overhead = (update_ms + write_ms + gather_ms) / pass_ms
        print(f"| {norm} | {update_ms:.2f} ms | {write_ms:.2f} ms | {gather_ms:.2f} ms | {pass_ms:.1f} ms | "
              f"{overhead:.1%} |")


if __name__ == "__main__":
    main()
