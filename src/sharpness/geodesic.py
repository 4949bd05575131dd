r"""Geodesic sharpness: worst-case sharpness on the quotient by the GL symmetries of attention.

Following da Silva, Dangel & Oore (ICML 2025), for every symmetry block :math:`(G, H)`
(:mod:`sharpness.symmetry`; :math:`S_G = G^\top G`, :math:`S_H = H^\top H`, relaxed to
:math:`S + \epsilon I` by ``Spec.gram_eps``) a tangent vector :math:`\xi = (\xi_G, \xi_H)` has the norm

.. math::
    \|\xi\|^2_{inv} = \mathrm{tr}(S_G^{-1}\xi_G^\top\xi_G) + \mathrm{tr}(S_H^{-1}\xi_H^\top\xi_H), \qquad
    \|\xi\|^2_{mix} = \mathrm{tr}(S_H\,\xi_G^\top\xi_G) + \mathrm{tr}(S_G\,\xi_H^\top\xi_H),

both invariant under :math:`(G, H, \xi_G, \xi_H) \mapsto (GA^{-1}, HA^\top, \xi_G A^{-1}, \xi_H A^\top)`.
Every other parameter keeps the elementwise-adaptive norm :math:`\|\xi_w / (|w| + \eta)\|_2`, held in
the normalised coordinates :math:`u = \xi_w / c` of :mod:`sharpness.space`; block entries are held as
:math:`\xi` itself. The total norm is the root of the sum of squares. Worst-case geodesic sharpness is

.. math::
    \max_{\xi\ \mathrm{horizontal},\ \|\xi\|_\theta \le \rho} L(\theta + \xi - \tfrac12\Gamma_\theta(\xi, \xi))
    - L(\theta),

searched by the same Auto-PGD loop as the flat case (:func:`sharpness.worst_case.apgd`); only the
point map, the gradient it pulls back and the ball (:class:`GeodesicBall`) change:

* **Horizontal projection**: :math:`\xi \mapsto (\xi_G + G\Lambda, \xi_H - H\Lambda^\top)`, the
  orthogonal projection (in the metric) off the vertical space :math:`\{(-GX, HX^\top)\}`. Writing the
  metric as :math:`\mathrm{tr}(M_G\xi_G^\top\xi_G) + \mathrm{tr}(M_H\xi_H^\top\xi_H)`, orthogonality is
  :math:`S_G \Lambda M_G + M_H \Lambda S_H = M_H \xi_H^\top H - G^\top \xi_G M_G`, a Sylvester equation
  solved exactly through two symmetric eigendecompositions taken once at the base point. For ``mix``
  with :math:`\epsilon = 0` it reduces to the closed form
  :math:`\Lambda = \tfrac12(\xi_H^\top H S_H^{-1} - S_G^{-1}G^\top\xi_G)`; for ``inv`` to
  :math:`AY + YA = B`, :math:`A = S_G S_H`, :math:`\Lambda = Y^\top` (the equation as printed in the
  paper, :math:`A\Lambda + \Lambda A^\top = B`, is not the projection; the tests show it). With
  :math:`\epsilon > 0` it stays the exact projection of the relaxed metric.
* **Riemannian gradient**: :math:`\nabla_G M_G^{-1}` (``inv``: :math:`\nabla_G S_G`; ``mix``:
  :math:`\nabla_G S_H^{-1}`), made horizontal and normalised by its metric norm (a Euclidean
  normalisation would break the invariance of the trajectory); elementwise parameters: :math:`c \odot
  \nabla_w`, as in the flat search.
* **Point**: the second-order geodesic :math:`\theta + \xi - \frac12\Gamma(\xi,\xi)` with, per block,
  ``inv``: :math:`G' = G + \xi_G + \frac12\xi_G S_G^{-1}(\xi_G^\top G + G^\top\xi_G) - \frac12 G
  S_G^{-1}\xi_G^\top\xi_G` (and :math:`H'` alike); ``mix``: :math:`G' = G + \xi_G + \frac12[G\,\xi_H^\top\xi_H
  - \xi_G(\xi_H^\top H + H^\top\xi_H)]S_H^{-1}` (and :math:`H'` with the roles swapped). The gradient
  with respect to :math:`\xi` is pulled back through this map (a few small matrix products per block).
  ``second_order="all"`` also bends elementwise parameters along their metric's geodesic,
  :math:`w + \xi + \mathrm{sign}(w)\,\xi^2 / (2c)`; ``"none"`` is the first-order ablation;
  ``"exact"`` follows the exact geodesic of GL(1) blocks (:meth:`Frame.exact_correction`).
* **Ball**: horizontal vectors of metric norm at most :math:`\rho`: a linear subspace meets a ball,
  so the projection is the horizontal projection followed by one rescale, and the convex
  combination of the Auto-PGD update stays feasible. ``Result.radius`` is the metric norm.

Everything is equivariant under the symmetry, so in exact arithmetic the whole search, and with it
the value, is invariant under any per-head reparametrisation of the blocks. A model without blocks
is searched exactly as flat adaptive L2 sharpness (bit for bit).

>>> g = torch.tensor([[[2.0]]]); h = torch.tensor([[[3.0]]])
>>> frame = Frame.at(g, h, "inv", 0.0)
>>> [float(t) for t in frame.horizontal(torch.tensor([[[1.0]]]), torch.tensor([[[0.0]]]))]  # xi_G/G = xi_H/H
[0.5, 0.75]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from sharpness.errors import SharpnessError
from sharpness.space import Ball, FlatBall, Radius, WeightSpace
from sharpness.spec import Spec
from sharpness.symmetry import Block, Piece, find_blocks

Metric = Literal["inv", "mix"]
Tensor = torch.Tensor


# ------------------------------------------------------------ block algebra
def _sym_power(s: Tensor, power: float) -> Tensor:
    """``s ** power`` of a batch of SPD matrices (float64)."""
    lam, q = torch.linalg.eigh(s)
    return (q * lam.clamp_min(0).pow(power).unsqueeze(-2)) @ q.transpose(-1, -2)


@dataclass
class Frame:
    """What the metric needs at the base point of a stack of blocks (leading dim: one entry per head).

    ``mg``/``mh`` are the metric's weights (``tr(mg xG^T xG) + tr(mh xH^T xH)``), ``mg_inv``/``mh_inv``
    their inverses (the Riemannian gradient), ``sg_inv``/``sh_inv`` the relaxed Gram inverses (the
    Christoffel terms), and ``l1, l2, inv_d`` the eigenbases that solve the projection's Sylvester
    equation: :math:`\\Lambda = L_1^\\top ((L_1 R L_2) \\odot D^{-1}) L_2^\\top`.

    Everything is precomputed in float64, then kept and applied in ``compute`` (float64, or the model's
    ``dtype`` where the metric is well enough conditioned for it: the Gram matrices of a reparametrised
    head square its condition number, which float32 products would not survive); results come back in
    the model's ``dtype``.
    """

    g: Tensor
    h: Tensor
    metric: Metric
    mg: Tensor
    mh: Tensor
    mg_inv: Tensor
    mh_inv: Tensor
    sg_inv: Tensor
    sh_inv: Tensor
    l1: Tensor
    l2: Tensor
    inv_d: Tensor
    condition: float
    top_g: Tensor
    top_h: Tensor
    dtype: torch.dtype
    compute: torch.dtype

    @classmethod
    def at(cls, g: Tensor, h: Tensor, metric: Metric, eps: float) -> Frame:
        """Precompute everything at ``(G, H)`` (shapes ``(B, n, k)`` and ``(B, m, k)``), in float64."""
        g64, h64 = g.double(), h.double()
        eye = torch.eye(g.shape[-1], dtype=torch.float64, device=g.device)
        sg, sh = g64.transpose(-1, -2) @ g64, h64.transpose(-1, -2) @ h64
        sg_r, sh_r = sg + eps * eye, sh + eps * eye
        sg_inv, sh_inv = torch.linalg.inv(sg_r), torch.linalg.inv(sh_r)
        if metric == "inv":
            mg, mh, mg_inv, mh_inv = sg_inv, sh_inv, sg_r, sh_r
        else:
            mg, mh, mg_inv, mh_inv = sh_r, sg_r, sh_inv, sg_inv
        # A1 = mh^-1 sg = P1 diag(lam) P1^-1 with P1 = mh^-1/2 Q1; A2 = sh mg^-1 = P2 diag(mu) P2^-1.
        mh_mhalf, mg_mhalf = _sym_power(mh, -0.5), _sym_power(mg, -0.5)
        lam, q1 = torch.linalg.eigh(mh_mhalf @ sg @ mh_mhalf)
        mu, q2 = torch.linalg.eigh(mg_mhalf @ sh @ mg_mhalf)
        d = lam.unsqueeze(-1) + mu.unsqueeze(-2)
        # Directions with d = 0 are no vertical direction at all (a rank-deficient, relaxed block).
        inv_d = torch.where(d > 1e-300, 1.0 / d.clamp_min(1e-300), torch.zeros_like(d))
        eig_g, eig_h = torch.linalg.eigvalsh(mg), torch.linalg.eigvalsh(mh)
        condition = float(torch.maximum(eig_g[..., -1] / eig_g[..., 0], eig_h[..., -1] / eig_h[..., 0]).max())
        c = torch.float64
        return cls(g=g64.to(c), h=h64.to(c), metric=metric, mg=mg.to(c), mh=mh.to(c), mg_inv=mg_inv.to(c),
                   mh_inv=mh_inv.to(c), sg_inv=sg_inv.to(c), sh_inv=sh_inv.to(c),
                   l1=(q1.transpose(-1, -2) @ mh_mhalf).to(c), l2=(mg_mhalf @ q2).to(c), inv_d=inv_d.to(c),
                   condition=condition, top_g=eig_g[..., -1], top_h=eig_h[..., -1], dtype=g.dtype, compute=c)

    def computing_in(self, dtype: torch.dtype) -> Frame:
        """The same frame, applied in ``dtype``."""
        names = ("g", "h", "mg", "mh", "mg_inv", "mh_inv", "sg_inv", "sh_inv", "l1", "l2", "inv_d")
        return replace(self, compute=dtype, **{n: getattr(self, n).to(dtype) for n in names})

    def inner(self, xg: Tensor, xh: Tensor, yg: Tensor, yh: Tensor) -> Tensor:
        """The metric :math:`\\langle x, y\\rangle` of each block, accumulated in float64: shape ``(B,)``."""
        xg, xh, yg, yh = (t.to(self.compute) for t in (xg, xh, yg, yh))
        f64 = torch.float64
        return ((xg @ self.mg) * yg).sum(dim=(-1, -2), dtype=f64) + ((xh @ self.mh) * yh).sum(dim=(-1, -2), dtype=f64)

    def horizontal(self, xg: Tensor, xh: Tensor) -> tuple[Tensor, Tensor]:
        """The metric-orthogonal projection onto the horizontal space."""
        xg, xh = xg.to(self.compute), xh.to(self.compute)
        r = self.mh @ xh.transpose(-1, -2) @ self.h - self.g.transpose(-1, -2) @ xg @ self.mg
        lam = self.l1.transpose(-1, -2) @ ((self.l1 @ r @ self.l2) * self.inv_d) @ self.l2.transpose(-1, -2)
        return (xg + self.g @ lam).to(self.dtype), (xh - self.h @ lam.transpose(-1, -2)).to(self.dtype)

    def riemannian(self, dg: Tensor, dh: Tensor) -> tuple[Tensor, Tensor]:
        """The metric's gradient from the Euclidean one (the Riesz map)."""
        c = self.compute
        return (dg.to(c) @ self.mg_inv).to(self.dtype), (dh.to(c) @ self.mh_inv).to(self.dtype)

    def exact_correction(self, xg: Tensor, xh: Tensor) -> tuple[Tensor, Tensor]:
        """``theta + xi - exp_theta(xi)`` for GL(1) blocks, whose geodesics are known in closed form.

        ``inv``: :math:`g' = g\\,e^{\\xi_g / g}` (the metric is :math:`\\xi^2/g^2` per coordinate);
        ``mix``: :math:`g' = g\\sqrt{1 + 2\\xi_g / g}` for a horizontal :math:`\\xi` (then
        :math:`\\xi_g/g = \\xi_h/h`); the geodesic ends where :math:`1 + 2\\xi_g/g` reaches 0, and so does the map.
        """
        def one(x: Tensor, base: Tensor) -> Tensor:
            x = x.to(self.compute)
            b = x / base
            moved = base * torch.exp(b) if self.metric == "inv" else base * (1 + 2 * b).clamp_min(0).sqrt()
            return (base + x - moved).to(self.dtype)
        return one(xg, self.g), one(xh, self.h)

    def half_christoffel(self, xg: Tensor, xh: Tensor) -> tuple[Tensor, Tensor]:
        """Half the Christoffel term, :math:`\\frac12\\Gamma(\\xi, \\xi)`: the perturbed block is
        :math:`\\theta + \\xi - \\frac12\\Gamma`."""
        g, h, xg, xh = self.g, self.h, xg.to(self.compute), xh.to(self.compute)
        if self.metric == "inv":
            def one(x: Tensor, base: Tensor, s_inv: Tensor) -> Tensor:
                sym = x.transpose(-1, -2) @ base
                return 0.5 * (base @ (s_inv @ (x.transpose(-1, -2) @ x)) - x @ (s_inv @ (sym + sym.transpose(-1, -2))))
            return one(xg, g, self.sg_inv).to(self.dtype), one(xh, h, self.sh_inv).to(self.dtype)
        sym_h = xh.transpose(-1, -2) @ h
        sym_g = xg.transpose(-1, -2) @ g
        cg = 0.5 * (xg @ (sym_h + sym_h.transpose(-1, -2)) - g @ (xh.transpose(-1, -2) @ xh)) @ self.sh_inv
        ch = 0.5 * (xh @ (sym_g + sym_g.transpose(-1, -2)) - h @ (xg.transpose(-1, -2) @ xg)) @ self.sg_inv
        return cg.to(self.dtype), ch.to(self.dtype)


# ------------------------------------------------------------ flat layout
@dataclass(frozen=True)
class _Slot:
    """One piece of one block inside the flat vector: which parameter, and where its rows go."""

    index: int
    piece: Piece
    heads: int
    head_dim: int
    head0: int
    row0: int
    rows: int

    def view(self, views: Sequence[Tensor]) -> Tensor:
        return self.piece.view(views[self.index], self.heads, self.head_dim)


class _Side:
    """One side (G or H) of a stack of same-shaped blocks, read from and written to flat vectors."""

    def __init__(self, slots: list[_Slot]) -> None:
        self.slots = slots

    def read(self, views: Sequence[Tensor]) -> Tensor:
        by_head: dict[int, list[Tensor]] = {}
        for s in self.slots:
            by_head.setdefault(s.head0, []).append(s.view(views))
        return torch.cat([torch.cat(parts, dim=1) for parts in by_head.values()], dim=0)

    def write(self, views: Sequence[Tensor], values: Tensor, add: bool = False) -> None:
        for s in self.slots:
            chunk = values[s.head0:s.head0 + s.heads, s.row0:s.row0 + s.rows]
            target = s.view(views)
            target.add_(chunk) if add else target.copy_(chunk)


@dataclass
class _Group:
    """Blocks of equal shapes, stacked: one batched product per operation."""

    names: list[str]
    g: _Side
    h: _Side
    frame: Frame


def _element_mask(space: WeightSpace, slots: list[_Slot]) -> Tensor:
    """How many block pieces cover each element of the flat vector."""
    count = torch.zeros_like(space.w0)
    views = space.views(count)
    for s in slots:
        s.view(views).add_(1)
    return count


def _runs(mask: Tensor) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges where ``mask`` holds."""
    m = mask.to(torch.int8).cpu()
    edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.int8), m, torch.zeros(1, dtype=torch.int8)]))
    starts = (edges == 1).nonzero().view(-1).tolist()
    stops = (edges == -1).nonzero().view(-1).tolist()
    return list(zip(starts, stops))


class GeodesicSpace(WeightSpace):
    """Normalised coordinates whose symmetry-block entries are tangent vectors of the quotient metric.

    Block entries have ``c = 1`` (they hold :math:`\\xi`), the others ``c = |w| + eta``; writing a point
    adds the Christoffel correction, reading a gradient pulls it back through that correction.
    """

    def __init__(self, model: nn.Module, named: Sequence[tuple[str, nn.Parameter]], spec: Spec,
                 filter_dims: dict[str, int]) -> None:
        super().__init__([p for _, p in named], [n for n, _ in named], "elementwise", spec.eta, filter_dims)
        self.metric: Metric = "inv" if spec.geometry == "inv" else "mix"
        self.second_order = spec.second_order
        blocks, self.skipped = _selected(model, named, spec.fold_bias)
        index = {id(p): i for i, (_, p) in enumerate(named)}
        params = dict(model.named_parameters(remove_duplicate=False))
        slots_of = {b.name + "." + b.kind: _slots(b, [index[id(params[p.param])] for p in b.g + b.h], params)
                    for b in blocks}
        every = [s for pair in slots_of.values() for side in pair for s in side]
        count = _element_mask(self, every)
        if bool((count > 1).any()):
            raise SharpnessError("symmetry blocks overlap: some parameter entries belong to two blocks; "
                                 f"blocks: {sorted(slots_of)}")
        in_block = count > 0
        with torch.no_grad():
            self.c = torch.where(in_block, torch.ones_like(self.c), self.c)
        self.active = self.c > 0
        self.free_runs = _runs(~in_block)
        self.groups = self._stack(blocks, slots_of, spec.gram_eps)
        wide = [n for g in self.groups if g.frame.g.shape[1:] != (1, 1) or g.frame.h.shape[1:] != (1, 1)
                for n in g.names]
        if spec.second_order == "exact" and wide:
            raise SharpnessError(f"second_order='exact' needs GL(1) blocks of scalars (diagonal networks); {wide} are "
                                 "wider and have no closed-form geodesic: use second_order='blocks'")
        self.vertical_dims = sum(b.heads * b.head_dim ** 2 for b in blocks)
        self.condition = max((g.frame.condition for g in self.groups), default=1.0)
        free_sign = torch.where(in_block, torch.zeros_like(self.w0), torch.sign(self.w0))
        self._sign = free_sign if spec.second_order == "all" else None
        # sign(w) c / 2 outside the blocks, made once: the bend of the elementwise geodesic is one addcmul
        self._half_sc = None if self._sign is None else 0.5 * self._sign * self.c
        self._pending: tuple[Tensor, list[tuple[Tensor, Tensor, Tensor, Tensor]]] | None = None

    def _stack(self, blocks: list[Block], slots_of: dict[str, tuple[list[_Slot], list[_Slot]]],
               eps: float) -> list[_Group]:
        by_shape: dict[tuple[int, int, int], list[str]] = {}
        for b in blocks:
            key = b.name + "." + b.kind
            g_slots, h_slots = slots_of[key]
            shape = (sum(s.rows for s in g_slots), sum(s.rows for s in h_slots), b.head_dim)
            by_shape.setdefault(shape, []).append(key)
        groups = []
        views = self.views(self.w0)
        for keys in by_shape.values():
            g_side = _Side(_restack([slots_of[k][0] for k in keys]))
            h_side = _Side(_restack([slots_of[k][1] for k in keys]))
            g0, h0 = g_side.read(views), h_side.read(views)
            if eps == 0:
                _check_rank(keys, g0, h0)
            frame = Frame.at(g0, h0, self.metric, eps)
            if _well_conditioned(frame.condition, g0.dtype):
                frame = frame.computing_in(g0.dtype)
            groups.append(_Group(keys, g_side, h_side, frame))
        return groups

    # ----------------------------------------------------------- the chart
    @property
    def flat(self) -> bool:  # type: ignore[override]
        """Without blocks and without the elementwise bend, a point is the flat ``w0 + c * u``."""
        return not self.groups and self._half_sc is None

    @property
    def runs_exactly(self) -> str | None:  # type: ignore[override]
        # The Christoffel terms are applied in float64 where the metric is ill-conditioned: no reduced precision.
        return None if self.flat else "the geodesic search has no fast path"

    def bend(self, u: Tensor, w: Tensor) -> None:
        """Subtract :math:`\\frac12\\Gamma(\\xi, \\xi)` from the point ``w = w0 + c * u`` (block by block)."""
        self._pending = None
        if self.second_order == "none":
            return
        views_u, views_w = self.views(u), self.views(w)
        tracked = []
        with torch.enable_grad():
            for group in self.groups:
                xg = group.g.read(views_u).detach().requires_grad_()
                xh = group.h.read(views_u).detach().requires_grad_()
                if self.second_order == "exact":
                    cg, ch = group.frame.exact_correction(xg, xh)
                else:
                    cg, ch = group.frame.half_christoffel(xg, xh)
                with torch.no_grad():
                    group.g.write(views_w, -cg, add=True)
                    group.h.write(views_w, -ch, add=True)
                tracked.append((xg, xh, cg, ch))
        if self._half_sc is not None:  # w + c u + sign(w) c u^2 / 2: the elementwise metric's geodesic
            w.addcmul_(self._half_sc, u * u)
        self._pending = (u, tracked)

    def pull_back(self, g: Tensor) -> None:
        """Turn ``c * grad_w`` into the gradient with respect to the coordinates, through the bend."""
        if self._pending is None:
            return
        u, tracked = self._pending
        views = self.views(g)
        for group, (xg, xh, cg, ch) in zip(self.groups, tracked):
            dg, dh = group.g.read(views), group.h.read(views)
            vg, vh = torch.autograd.grad((cg, ch), (xg, xh), (dg, dh))
            group.g.write(views, -vg, add=True)
            group.h.write(views, -vh, add=True)
        if self._sign is not None:
            g.addcmul_(g * self._sign, u)

    def ball(self, spec: Radius) -> Ball:
        if not self.groups:
            return FlatBall(spec.norm, spec.rho, self.w0.dtype)
        return GeodesicBall(self, spec.rho)

    def details(self) -> dict[str, Any]:
        return {"geodesic": {
            "metric": self.metric,
            "blocks": [n for g in self.groups for n in g.names],
            "heads": sum(g.frame.g.shape[0] for g in self.groups),
            "skipped": self.skipped,
            "second_order": self.second_order,
            "block_entries": int(self.numel - sum(b - a for a, b in self.free_runs)),
            "metric_condition": self.condition,
        }}


def _slots(block: Block, indices: list[int], params: dict[str, nn.Parameter]) -> tuple[list[_Slot], list[_Slot]]:
    sides: list[list[_Slot]] = [[], []]
    k = 0
    for side, pieces in zip(sides, (block.g, block.h)):
        row = 0
        for piece in pieces:
            rows = piece.rows(params[piece.param].shape)
            side.append(_Slot(indices[k], piece, block.heads, block.head_dim, 0, row, rows))
            row += rows
            k += 1
    return sides[0], sides[1]


def _restack(per_block: list[list[_Slot]]) -> list[_Slot]:
    """The slots of several blocks, their heads placed one block after another."""
    out, head0 = [], 0
    for slots in per_block:
        out += [_Slot(s.index, s.piece, s.heads, s.head_dim, head0, s.row0, s.rows) for s in slots]
        head0 += slots[0].heads
    return out


# Largest metric condition number times the working precision's epsilon for which the per-iteration
# products run in that precision: their relative error is about that product.
_WORKING_PRECISION_BUDGET = 1e-5


def _well_conditioned(condition: float, dtype: torch.dtype) -> bool:
    return condition * torch.finfo(dtype).eps <= _WORKING_PRECISION_BUDGET


def _check_rank(keys: list[str], g: Tensor, h: Tensor) -> None:
    for name, x in (("G", g), ("H", h)):
        s = torch.linalg.svdvals(x.double())
        tol = max(x.shape[-2:]) * torch.finfo(x.dtype).eps * s[..., :1]
        bad = (s[..., -1:] <= tol).view(-1).nonzero().view(-1).tolist()
        if bad:
            raise SharpnessError(
                f"symmetry blocks {keys}: {name} of head(s) {bad[:8]} has rank < {x.shape[-1]} (the Gram matrix is "
                "singular); set gram_eps > 0 to relax it, or exclude those parameters with params="
            )


def _selected(model: nn.Module, named: Sequence[tuple[str, nn.Parameter]],
              fold_bias: bool) -> tuple[list[Block], list[str]]:
    """Blocks whose every parameter is perturbed; the others' parameters stay elementwise (named in the result)."""
    chosen = {id(p) for _, p in named}
    dtypes = {p.dtype for _, p in named}
    params = dict(model.named_parameters(remove_duplicate=False))
    kept, skipped = [], []
    for b in find_blocks(model, fold_bias):
        if all(id(params[n]) in chosen for n in b.params) and len(dtypes) == 1:
            kept.append(b)
        else:
            skipped.append(f"{b.name}.{b.kind}")
    return kept, skipped


# ------------------------------------------------------------------ the ball
class GeodesicBall:
    """Horizontal vectors of metric norm at most ``rho``: projection, ascent step, combination, norm.

    A rescale rounds every entry by up to half an ulp, and the metric can magnify that: by up to
    :math:`\\sqrt{\\lambda_{max}(M)}\\,\\|x_b\\|_F\\,\\epsilon/2` in block ``b``, far more than
    :math:`\\epsilon\\|x\\|_\\theta` when a head is badly conditioned. Each rescale therefore aims at
    ``radius`` minus that bound for the vector at hand, which keeps every stored point feasible without
    shrinking the ball more than its rounding requires.
    """

    def __init__(self, space: GeodesicSpace, rho: float) -> None:
        self.space = space
        self.eps = torch.finfo(space.w0.dtype).eps
        self.radius = rho * (1 - 16 * self.eps)

    def _blocks(self, x: Tensor) -> list[tuple[_Group, Tensor, Tensor]]:
        views = self.space.views(x)
        return [(grp, grp.g.read(views), grp.h.read(views)) for grp in self.space.groups]

    def norm(self, x: Tensor) -> Tensor:
        """The metric norm :math:`\\|x\\|_\\theta`, accumulated in float64."""
        return self._norm_and_slack(x)[0]

    def _norm_and_slack(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The metric norm and a bound on how much rounding ``x`` times a factor <= 1 can add to it."""
        x = x.reshape(-1)
        total = self._free_square(x)
        slack = total.clone()
        for grp, xg, xh in self._blocks(x):
            total = total + grp.frame.inner(xg, xh, xg, xh).sum()
            squares = (xg.square().sum(dim=(-1, -2), dtype=torch.float64) * grp.frame.top_g
                       + xh.square().sum(dim=(-1, -2), dtype=torch.float64) * grp.frame.top_h)
            slack = slack + squares.sum()
        return total.sqrt(), slack.sqrt() * self.eps

    def _free_square(self, x: Tensor) -> Tensor:
        """The squared L2 norm of the entries outside every block, in float64."""
        x = x.reshape(-1)
        free = [x[a:b] for a, b in self.space.free_runs]
        if not free:
            return torch.zeros((), dtype=torch.float64, device=x.device)
        return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float64) for t in free]).square().sum()

    def _rescale(self, x: Tensor) -> Tensor:
        norm, slack = self._norm_and_slack(x)
        factor = torch.where(norm <= self.radius, torch.ones_like(norm), self.radius / (norm + slack))
        return x.mul_(factor.to(x.dtype))

    def horizontal(self, x: Tensor) -> Tensor:
        """A copy of ``x`` with every block made horizontal."""
        out = x.clone()
        views = self.space.views(out)
        for grp, xg, xh in self._blocks(x):
            hg, hh = grp.frame.horizontal(xg, xh)
            grp.g.write(views, hg)
            grp.h.write(views, hh)
        return out

    def project(self, x: Tensor) -> Tensor:
        return self._rescale(self.horizontal(x.reshape(-1))).view_as(x)

    def advance(self, x: Tensor, g: Tensor, step: Tensor) -> Tensor:
        """:math:`P(x + \\eta\\, d / \\|d\\|_\\theta)` with :math:`d` the horizontal Riemannian gradient."""
        d = g.clone()
        views = self.space.views(d)
        square = self._free_square(g)
        for grp, dg, dh in self._blocks(g):
            rg, rh = grp.frame.horizontal(*grp.frame.riemannian(dg, dh))
            grp.g.write(views, rg)
            grp.h.write(views, rh)
            square = square + grp.frame.inner(rg, rh, rg, rh).sum()
        length = square.sqrt().clamp_min(torch.finfo(torch.float64).tiny)
        return self._rescale(torch.add(x, d * (step / length).to(d.dtype)))

    def combine(self, a: Tensor, b: Tensor, weight: float) -> Tensor:
        return self._rescale(torch.lerp(a, b, weight))

    def start(self, numel: int, like: Tensor, generator: torch.Generator) -> Tensor:
        """A random feasible point: Gaussian in the metric, made horizontal, at a uniform-in-volume radius."""
        space = self.space
        x = torch.randn(numel, generator=generator, device=like.device, dtype=like.dtype)
        views = space.views(x)
        for grp, zg, zh in self._blocks(x):  # covariance M^-1 in each block: isotropic in the metric
            f = grp.frame
            grp.g.write(views, (zg.double() @ torch.linalg.cholesky(f.mg_inv.double()).mT).to(zg.dtype))
            grp.h.write(views, (zh.double() @ torch.linalg.cholesky(f.mh_inv.double()).mT).to(zh.dtype))
        x = self.horizontal(x * space.active)
        dims = max(1, space.numel - space.vertical_dims)
        radius = self.radius * torch.rand((), generator=generator, device=x.device, dtype=torch.float64) ** (1 / dims)
        return x.mul_((radius / self.norm(x)).to(x.dtype))


def geodesic_space(model: nn.Module, named: Sequence[tuple[str, nn.Parameter]], spec: Spec,
                   filter_dims: dict[str, int]) -> GeodesicSpace:
    """The coordinates and metric of ``spec.geometry`` for the selected parameters of ``model``."""
    return GeodesicSpace(model, named, spec, filter_dims)


