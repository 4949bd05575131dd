r"""GL symmetry blocks: the parameters an attention head can trade without changing the function.

A **block** is a pair of matrices :math:`G \in \mathbb R^{n \times h}`, :math:`H \in \mathbb R^{m \times h}`
that enter the network only through :math:`G H^\top`, so :math:`(G A^{-1}, H A^\top)` computes the same
function for every invertible :math:`A \in GL(h)`. In the ``x W`` convention every attention head
:math:`i` has two (da Silva et al. 2025, Example A.1):

* query-key: :math:`G = W_Q^i`, :math:`H = W_K^i` (scores :math:`x W_Q^i (x' W_K^i)^\top`);
* value-output: :math:`G = W_V^i`, :math:`H = (W_O^i)^\top` (the head's share of the output
  projection).

Biases fold in as extra rows (``fold_bias``): :math:`G = [W_Q; b_Q^\top]`, :math:`H = [W_K; b_K^\top]`, and
:math:`G = [W_V; b_V^\top]` for values (softmax rows sum to one); the output bias is in no block. The
symmetry moves those biases too, so only the folded blocks are exactly invariant.

Each side of a block is a list of :class:`Piece` s, slices of parameter tensors stacked along rows;
the heads of one module form one :class:`Block` with a leading head dimension. Found automatically
(:func:`find_blocks`):

* ``torch.nn.MultiheadAttention`` (fused ``in_proj_weight`` or separate ``q/k/v_proj_weight``, biases,
  ``bias_k`` / ``bias_v``, which are extra key / value rows);
* Hugging Face BERT-style attention (``self.query/key/value`` with ``output.dense``) and the
  ``q_proj/k_proj/v_proj`` + ``o_proj`` / ``out_proj`` style (ViT, CLIP) when every head has its own
  keys (no grouped-query attention) and no rotary embedding;
* fused ``qkv`` + ``proj`` / ``out`` modules (timm ``Attention``, this project's SimpleViT); a
  query-key block is skipped when ``q_norm`` / ``k_norm`` is not the identity (normalising queries and
  keys breaks that symmetry).

Any other module declares its blocks with a method ``sharpness_blocks(fold_bias) -> list[Block]``
whose piece names are relative to the module (see :class:`sharpness.toy.diagonal.DiagonalNet`, whose
pairs :math:`(u_i, v_i)` are :math:`GL(1)` blocks). :func:`describe_blocks` lists what was found;
head ``i`` takes ``head_dim`` consecutive entries of each slice shown:

>>> import torch
>>> mha = torch.nn.MultiheadAttention(8, num_heads=2, bias=False)
>>> print(describe_blocks(mha))
qk: 2 heads of GL(4): G = in_proj_weight[0:8, :]^T; H = in_proj_weight[8:16, :]^T
vo: 2 heads of GL(4): G = in_proj_weight[16:24, :]^T; H = out_proj.weight[:, 0:8]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from sharpness.errors import SharpnessError


@dataclass(frozen=True)
class Piece:
    """Rows of one side of a block, for every head at once, cut from one parameter.

    ``axis`` is the axis of the stored tensor along which the head dimensions run (``start`` is where
    head 0 begins; head ``i`` takes ``head_dim`` consecutive entries after head ``i - 1``):

    * a matrix ``(a, b)`` with ``axis=0`` (an ``nn.Linear`` weight ``out x in`` split by output) gives
      ``b`` rows per head: the head's slice transposed;
    * a matrix with ``axis=1`` (an output projection split by input) gives ``a`` rows per head;
    * a vector (a bias; any tensor with one non-trivial dimension) gives one row per head.
    """

    param: str
    axis: int = 0
    start: int = 0

    def rows(self, shape: torch.Size) -> int:
        """Rows this piece adds to each head's matrix."""
        if _is_vector(shape):
            return 1
        return int(shape[1] if self.axis == 0 else shape[0])

    def view(self, t: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
        """The piece as a ``(heads, rows, head_dim)`` view of ``t`` (the parameter, or a tensor shaped like it)."""
        stop = self.start + heads * head_dim
        if _is_vector(t.shape):
            return t.reshape(-1)[self.start:stop].view(heads, 1, head_dim)
        a, b = t.shape
        if self.axis == 0:
            return t[self.start:stop].view(heads, head_dim, b).transpose(1, 2)
        return t[:, self.start:stop].view(a, heads, head_dim).transpose(0, 1)

    def describe(self, shape: torch.Size, head_dim: int, heads: int) -> str:
        span = f"{self.start}:{self.start + heads * head_dim}"
        if _is_vector(shape):
            return f"{self.param}[{span}]"
        return f"{self.param}[{span}, :]^T" if self.axis == 0 else f"{self.param}[:, {span}]"


def _is_vector(shape: torch.Size) -> bool:
    return sum(1 for s in shape if s != 1) <= 1


@dataclass(frozen=True)
class Block:
    """``heads`` independent GL(``head_dim``) blocks ``(G_i, H_i)``; each side is its pieces stacked by rows."""

    name: str
    kind: str
    heads: int
    head_dim: int
    g: tuple[Piece, ...]
    h: tuple[Piece, ...]

    def prefixed(self, prefix: str) -> Block:
        """The same block with every name below the module ``prefix``."""
        if not prefix:
            return self
        def below(p: Piece) -> Piece:
            return replace(p, param=f"{prefix}.{p.param}")
        name = f"{prefix}.{self.name}" if self.name else prefix
        return replace(self, name=name, g=tuple(map(below, self.g)), h=tuple(map(below, self.h)))

    @property
    def params(self) -> list[str]:
        return [p.param for p in self.g + self.h]

    def describe(self, shapes: dict[str, torch.Size]) -> str:
        def side(pieces: tuple[Piece, ...]) -> str:
            return " + ".join(p.describe(shapes[p.param], self.head_dim, self.heads) for p in pieces)
        head = f"{self.name}.{self.kind}" if self.name else self.kind
        return f"{head}: {self.heads} heads of GL({self.head_dim}): G = {side(self.g)}; H = {side(self.h)}"


# --------------------------------------------------------------- finders
def _linear(module: nn.Module, name: str) -> nn.Linear | None:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Linear) else None


def _with_bias(weight: str, bias: str | None, axis_start: int, fold_bias: bool) -> tuple[Piece, ...]:
    pieces = (Piece(weight, 0, axis_start),)
    return pieces + ((Piece(bias, 0, axis_start),) if bias is not None and fold_bias else ())


def _attention_blocks(heads: int, head_dim: int, q: tuple[Piece, ...], k: tuple[Piece, ...],
                      v: tuple[Piece, ...], out: Piece, with_qk: bool = True) -> list[Block]:
    blocks = [Block("", "qk", heads, head_dim, q, k)] if with_qk else []
    return [*blocks, Block("", "vo", heads, head_dim, v, (out,))]


def _multihead(module: nn.Module, fold_bias: bool) -> list[Block] | None:
    if not isinstance(module, nn.MultiheadAttention):
        return None
    e, heads, dh = module.embed_dim, module.num_heads, module.head_dim
    bias = "in_proj_bias" if module.in_proj_bias is not None else None
    if module._qkv_same_embed_dim:
        q, k, v = (_with_bias("in_proj_weight", bias, s * e, fold_bias) for s in range(3))
    else:
        q, k, v = (_with_bias(f"{s}_proj_weight", None, 0, fold_bias) for s in "qkv")
        if bias is not None and fold_bias:
            q, k, v = ((*side, Piece(bias, 0, s * e)) for s, side in enumerate((q, k, v)))
    # Learned extra key / value tokens are rows of keys / values: the symmetry moves them as such.
    if module.bias_k is not None and fold_bias:
        k = (*k, Piece("bias_k"))
    if module.bias_v is not None and fold_bias:
        v = (*v, Piece("bias_v"))
    return _attention_blocks(heads, dh, q, k, v, Piece("out_proj.weight", 1, 0))


def _separate(prefix: str, linear: nn.Linear, fold_bias: bool) -> tuple[Piece, ...]:
    return _with_bias(f"{prefix}.weight", f"{prefix}.bias" if linear.bias is not None else None, 0, fold_bias)


def _bert_style(module: nn.Module, fold_bias: bool) -> list[Block] | None:
    output = getattr(module, "output", None)
    dense = _linear(output, "dense") if output is not None else None
    for child in ("self", "attention"):
        inner = getattr(module, child, None)
        if inner is None or dense is None:
            continue
        q, k, v = (_linear(inner, n) for n in ("query", "key", "value"))
        heads = getattr(inner, "num_attention_heads", None)
        dh = getattr(inner, "attention_head_size", None)
        if q is None or k is None or v is None or not isinstance(heads, int) or not isinstance(dh, int):
            continue
        # Relative position scores multiply queries by learned distance embeddings: no query-key symmetry.
        absolute = getattr(inner, "position_embedding_type", "absolute") == "absolute"
        return _attention_blocks(heads, dh, _separate(f"{child}.query", q, fold_bias),
                                 _separate(f"{child}.key", k, fold_bias),
                                 _separate(f"{child}.value", v, fold_bias),
                                 Piece("output.dense.weight", 1, 0), with_qk=absolute)
    return None


def _projection_style(module: nn.Module, fold_bias: bool) -> list[Block] | None:
    q, k, v = (_linear(module, f"{s}_proj") for s in "qkv")
    out_name = next((n for n in ("o_proj", "out_proj") if _linear(module, n) is not None), None)
    heads = getattr(module, "num_heads", getattr(module, "num_attention_heads", None))
    dh = getattr(module, "head_dim", None)
    if q is None or k is None or v is None or out_name is None or not isinstance(heads, int):
        return None
    if not isinstance(dh, int):
        dh = q.out_features // heads
    kv_heads = getattr(module, "num_key_value_heads", heads)
    if kv_heads != heads or q.out_features != heads * dh or k.out_features != heads * dh:
        return None  # grouped-query attention: not handled, left elementwise
    rotary = any("rotary" in n or "rope" in n for n, _ in module.named_children())
    return _attention_blocks(heads, dh, _separate("q_proj", q, fold_bias), _separate("k_proj", k, fold_bias),
                             _separate("v_proj", v, fold_bias), Piece(f"{out_name}.weight", 1, 0),
                             with_qk=not rotary)


def _fused_qkv(module: nn.Module, fold_bias: bool) -> list[Block] | None:
    qkv = _linear(module, "qkv")
    out_name = next((n for n in ("proj", "out", "o_proj", "out_proj") if _linear(module, n) is not None), None)
    heads = getattr(module, "num_heads", getattr(module, "heads", None))
    if qkv is None or out_name is None or not isinstance(heads, int) or qkv.out_features % 3:
        return None
    d = qkv.out_features // 3
    if d % heads:
        return None
    dh = d // heads
    bias = "qkv.bias" if qkv.bias is not None else None
    q, k, v = (_with_bias("qkv.weight", bias, s * d, fold_bias) for s in range(3))
    normed = any(not isinstance(getattr(module, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm"))
    return _attention_blocks(heads, dh, q, k, v, Piece(f"{out_name}.weight", 1, 0), with_qk=not normed)


FINDERS = (_multihead, _bert_style, _projection_style, _fused_qkv)


def find_blocks(model: nn.Module, fold_bias: bool = True) -> list[Block]:
    """Every GL block of ``model``, with parameter names as in ``model.named_parameters()``.

    A module's own ``sharpness_blocks(fold_bias)`` method takes precedence over the finders; the
    modules inside a module that produced blocks are not searched again.
    """
    blocks: list[Block] = []
    done: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(d + ".") for d in done):
            continue
        declared = getattr(module, "sharpness_blocks", None)
        found = declared(fold_bias) if callable(declared) else None
        for finder in () if found is not None else FINDERS:
            found = finder(module, fold_bias)
            if found is not None:
                break
        if found:
            blocks += [b.prefixed(name) for b in found]
            done.append(name)
    _check_blocks(model, blocks)
    return blocks


def _check_blocks(model: nn.Module, blocks: list[Block]) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    for block in blocks:
        for piece in block.g + block.h:
            if piece.param not in params:
                raise SharpnessError(f"symmetry block {block.name!r}: the model has no parameter {piece.param!r}")
            shape = params[piece.param].shape
            if not _is_vector(shape) and len(shape) != 2:
                raise SharpnessError(f"symmetry block {block.name!r}: {piece.param!r} has shape {tuple(shape)}; "
                                     "a piece is a matrix or a vector")
            length = shape.numel() if _is_vector(shape) else shape[piece.axis]
            if piece.start + block.heads * block.head_dim > length:
                raise SharpnessError(
                    f"symmetry block {block.name!r}: {block.heads} heads of {block.head_dim} from {piece.start} do "
                    f"not fit in {piece.param!r} of shape {tuple(shape)}"
                )


def describe_blocks(model: nn.Module, fold_bias: bool = True) -> str:
    """One line per block: its module, kind, heads and the parameter slices of each side."""
    shapes = {n: p.shape for n, p in model.named_parameters(remove_duplicate=False)}
    return "\n".join(b.describe(shapes) for b in find_blocks(model, fold_bias))


@torch.no_grad()
def act(model: nn.Module, block: Block, a: torch.Tensor) -> None:
    """Apply the symmetry in place: :math:`(G_i, H_i) \\mapsto (G_i A_i^{-1}, H_i A_i^\\top)` for every head ``i``.

    ``a`` has shape ``(heads, head_dim, head_dim)``; the function the model computes is unchanged
    (up to rounding), which is what the tests of invariance rely on.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    if a.shape != (block.heads, block.head_dim, block.head_dim):
        raise SharpnessError(f"act: expected matrices of shape {(block.heads, block.head_dim, block.head_dim)}, "
                             f"got {tuple(a.shape)}")
    for pieces, right in ((block.g, torch.linalg.inv(a)), (block.h, a.transpose(-1, -2))):
        for piece in pieces:
            view = piece.view(params[piece.param], block.heads, block.head_dim)
            view.copy_(view @ right.to(view.dtype))


def reparametrised(model: nn.Module, scale: float = 1.0, seed: int = 0, fold_bias: bool = True) -> nn.Module:
    """A copy of ``model`` with every block moved by its own random ``A = scale * N(0, 1)`` per head.

    The copy computes the same function (up to rounding), so any measure invariant to the symmetry
    must give it the same value: the check the tests and ``benchmarks/geodesic_invariance.py`` make.
    """
    import copy

    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for block in find_blocks(out, fold_bias):
        a = scale * torch.randn(block.heads, block.head_dim, block.head_dim, generator=g, dtype=torch.float64)
        act(out, block, a)
    return out
