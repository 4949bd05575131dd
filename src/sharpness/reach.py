r"""The coordinates an m-batch can reach: embedding rows it never looks up are left out of its search.

An ``nn.Embedding`` reads only the rows of the ids it is given, so the loss of an m-batch :math:`S` does not
depend on the other rows: with :math:`R_S` the rows it looks up,

.. math:: \max_{\|u\|_p \le \rho} L_S(w + c \odot u) = \max_{\|u_{R_S}\|_p \le \rho} L_S(w + c \odot u_{R_S}),

and from :math:`u = 0` Auto-PGD never moves an unreached coordinate (its gradient is exactly zero at every
iterate: the L-infinity sign is 0, the L2 step adds 0, and a rescaling projection keeps 0 at 0). So the
search of one m-batch may run on :math:`u_{R_S}` alone: the same iterates (bit for bit in L-infinity; in
L2 the norms sum fewer zeros, so they may differ in the last bit), at a cost per iteration that no
longer grows with the vocabulary. A BERT-sized encoder's word embedding is half its parameters, of which an
m-batch of 16 x 64 tokens reaches about 3%.

The average case gains the same way: a draw only has to fill the rows an m-batch reads, provided the
numbers those rows get do not depend on what else is drawn. A sequential generator cannot promise that, so
a draw over row coordinates takes its embedding rows from noise keyed by row id (draw stream 2,
:class:`~sharpness.average_case.Addressed`): the loss at every draw is, bit for bit, the one the whole draw
gives.

Only rows that provably cannot matter are left out: an embedding qualifies when it is a plain
``nn.Embedding`` (its own ``forward``, no ``max_norm`` renormalising rows in place, dense gradients) whose
weight no other module shares (tied output layers are excluded). While the clean loss of an m-batch is
computed, every torch function called is watched: the rows are those its ``F.embedding`` lookups name, and a
weight read any other way (a functional ``x @ emb.weight.T``, indexing, ``.data``) counts with every row.
The first gradient of every search is checked as well, and a nonzero entry outside the rows makes that
m-batch's search run over every coordinate instead (:class:`Unreached`).

This pays where a pass over the flat vector costs time, the CPU; on an accelerator those passes are
microseconds and one coordinate system for every m-batch lets the fast mode stack them, so there it is off.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from sharpness.average_case import Addressed
from sharpness.space import Ball, FlatBall, Pool, Radius, WeightSpace


class Unreached(Exception):
    """An unreached row had a nonzero gradient: the model reads the embedding some other way."""


def embeddings(model: nn.Module, space: WeightSpace) -> dict[nn.Embedding, int]:
    """The qualifying embeddings among the perturbed parameters: module -> index of its weight in ``space``."""
    if type(space) is not WeightSpace or space.w0.device.type != "cpu":
        return {}
    index = {id(p): i for i, p in enumerate(space.params)}
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    found = {}
    for module in model.modules():
        if (isinstance(module, nn.Embedding) and type(module).forward is nn.Embedding.forward
                and module.max_norm is None and not module.sparse and id(module.weight) in index
                and owners[id(module.weight)] == 1):
            found[module] = index[id(module.weight)]
    return found


@contextlib.contextmanager
def recorded(found: dict[nn.Embedding, int], rows: dict[int, torch.Tensor | None]) -> Iterator[None]:
    """Collect into ``rows`` (parameter index -> sorted row ids) the rows the embeddings look up in the block.

    Every torch function called in the block is watched (a function mode), so what is known is every way
    the weights were read, not only the embeddings' own calls: an embedding whose weight is also read some
    other way (``x @ emb.weight.T``, indexing, ``.data``) maps to ``None`` (every row counts), one never read
    to no rows at all. Only rows known to be unread are left out.
    """
    watched = {id(module.weight): index for module, index in found.items()}
    for index in found.values():
        rows[index] = torch.empty(0, dtype=torch.long)
    with _Reads(watched, rows):
        yield


class _Reads(TorchFunctionMode):
    """Records the rows looked up by ``F.embedding`` calls on watched weights; any other read marks all."""

    def __init__(self, watched: dict[int, int], rows: dict[int, torch.Tensor | None]) -> None:
        super().__init__()
        self.watched, self.rows = watched, rows

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        read = [self.watched[id(t)] for t in _tensors((args, kwargs)) if id(t) in self.watched]
        if read:
            self._record(func, args, kwargs, set(read))
        return func(*args, **kwargs)

    def _record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], read: set[int]) -> None:
        ids = kwargs.get("input", args[0] if args else None)
        weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
        max_norm = kwargs.get("max_norm", args[3] if len(args) > 3 else None)  # it rewrites the rows it reads
        lookup = (func is F.embedding and id(weight) in self.watched and max_norm is None and len(read) == 1
                  and id(ids) not in self.watched)
        for index in read:
            seen = self.rows.get(index)
            if not lookup or seen is None or not isinstance(ids, torch.Tensor):
                self.rows[index] = None
                continue
            self.rows[index] = torch.unique(torch.cat([seen, ids.detach().reshape(-1).to(seen.device)]))


def _tensors(tree: Any) -> Iterator[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts of arguments."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


class RowSpace:
    """The coordinates of a :class:`~sharpness.space.WeightSpace` restricted to some rows of some parameters.

    A point is :math:`w_0 + c \\odot u` on the kept rows; the other rows hold :math:`w_0`. :meth:`reset`
    writes :math:`w_0` back into every row this space writes, bit for bit.
    """

    flat = False  # a point is not w0 + c * u over the whole of each parameter
    runs_exactly: str | None = None

    def __init__(self, base: WeightSpace, rows: dict[int, torch.Tensor | None]) -> None:
        self.base, self.rows, self.params = base, rows, base.params
        with torch.no_grad():
            self._w0 = [self._kept(i, w) for i, w in enumerate(base.views(base.w0))]
            self._c = [self._kept(i, c) for i, c in enumerate(base.views(base.c))]
            self.w0 = torch.cat([w.reshape(-1) for w in self._w0])
        self.shapes = [w.shape for w in self._w0]
        self.numels = [w.numel() for w in self._w0]
        self.pool = Pool()
        self._checked = False

    # The flat scale vector and mask are built only when asked for: points are written, and gradients
    # gathered, one parameter at a time from ``_c``, and building them costs a third of a forward pass.
    @functools.cached_property
    def c(self) -> torch.Tensor:
        return torch.cat([c.reshape(-1) for c in self._c])

    @functools.cached_property
    def active(self) -> torch.Tensor:
        return self.c > 0

    @functools.cached_property
    def addressed(self) -> Addressed:
        """Its draws in stream 2: each embedding's rows keyed by row id, so they are the whole space's."""
        rows = {i: r if r is not None else torch.arange(self.base.shapes[i][0]) for i, r in self.rows.items()}
        return Addressed(self.shapes, rows)

    def _kept(self, i: int, t: torch.Tensor) -> torch.Tensor:
        r = self.rows.get(i)
        return t if r is None else t.index_select(0, r)

    @property
    def numel(self) -> int:
        return self.w0.numel()

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(s) for t, s in zip(flat.split(self.numels), self.shapes)]

    @torch.no_grad()
    def set(self, u: torch.Tensor) -> None:
        for i, (p, w0, c, x) in enumerate(zip(self.params, self._w0, self._c, self.views(u))):
            r = self.rows.get(i)
            if r is None:
                torch.addcmul(w0, c, x, out=p.detach())
            else:
                p.detach().index_copy_(0, r, torch.addcmul(w0, c, x))

    @torch.no_grad()
    def reset(self) -> None:
        for i, (p, w0) in enumerate(zip(self.params, self._w0)):
            r = self.rows.get(i)
            p.detach().copy_(w0) if r is None else p.detach().index_copy_(0, r, w0)

    def grad_u(self, loss: torch.Tensor) -> torch.Tensor:
        return self.gather(torch.autograd.grad(loss, self.params, allow_unused=True))

    def gather(self, grads: Any) -> torch.Tensor:
        """:math:`c \\odot \\nabla_w L` on the kept rows; the first call checks that no other row has a gradient."""
        flat = self.pool.take(self.w0)
        for i, (g, c, out) in enumerate(zip(grads, self._c, self.views(flat))):
            r = self.rows.get(i)
            if g is None:
                out.zero_()
                continue
            kept = g if r is None else g.index_select(0, r)
            if r is not None and not self._checked and int(torch.count_nonzero(g)) != int(torch.count_nonzero(kept)):
                raise Unreached(f"parameter {i} has a gradient outside the rows its embedding looked up")
            torch.mul(kept, c, out=out)
        self._checked = True
        return flat

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.w0)

    def ball(self, spec: Radius) -> Ball:
        return FlatBall(spec.norm, spec.rho, self.w0.dtype, self.pool)

    def details(self) -> dict[str, Any]:
        return {}
