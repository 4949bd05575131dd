"""Geodesic sharpness through ``measure``: invariance on real attention modules, limits, closed forms.

Every model is float64. A reparametrisation draws, per head and per block, ``A = a * N(0, 1)``
and applies ``(G, H) -> (G A^-1, H A^T)`` (the function is unchanged); geodesic sharpness must not
move, adaptive sharpness does.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from sharpness import SharpnessError, Spec, measure
from sharpness.symmetry import Block, Piece, describe_blocks, find_blocks, reparametrised
from sharpness.toy.diagonal import DiagonalNet
from sharpness.zoo.models import SimpleViT
from testkit import assert_restored, classification_data, mlp, snapshot


class SelfAttention(nn.Module):
    """An nn.MultiheadAttention classifier over token sequences."""

    def __init__(self, d: int = 16, heads: int = 4, kdim: int | None = None, bias: bool = True,
                 bias_kv: bool = False) -> None:
        super().__init__()
        self.kv = nn.Linear(d, kdim) if kdim else None
        self.attn = nn.MultiheadAttention(d, heads, bias=bias, add_bias_kv=bias_kv, kdim=kdim, vdim=kdim,
                                          batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)
        with torch.no_grad():  # nn.MultiheadAttention starts its biases at zero: make them count
            for name, p in self.attn.named_parameters():
                if "bias" in name:
                    p.normal_(0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.kv(x) if self.kv is not None else x
        y, _ = self.attn(x, kv, kv, need_weights=False)
        return self.head(self.norm(x + y).mean(1))


class FusedQKV(nn.Module):
    """timm-style attention: one qkv projection, optional query/key normalisation."""

    def __init__(self, d: int = 16, heads: int = 2, qk_norm: bool = False) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.q_norm = nn.LayerNorm(d // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(d // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class Tokens(nn.Module):
    def __init__(self, body: nn.Module, d: int = 16) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)).mean(1))


def sequences(n: int = 64, t: int = 5, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, t, d, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def bert() -> tuple[nn.Module, list]:
    transformers = pytest.importorskip("transformers", reason="pip install 'sharpness[text]'")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.3)
    model = transformers.BertForSequenceClassification(config).double().eval()
    g = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 40, (16, 8), generator=g),
                "attention_mask": torch.ones(16, 8, dtype=torch.long),
                "labels": torch.randint(0, 3, (16,), generator=g)} for _ in range(2)]
    return model, batches


def vit_hf() -> tuple[nn.Module, list]:
    transformers = pytest.importorskip("transformers", reason="pip install 'sharpness[text]'")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3,
                                    initializer_range=0.3)
    model = transformers.ViTForImageClassification(config).double().eval()
    g = torch.Generator().manual_seed(1)
    return model, [{"pixel_values": torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64),
                    "labels": torch.randint(0, 3, (16,), generator=g)}]


def token_data() -> list:
    x, y = sequences()
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def image_data() -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))]


def simple_vit() -> nn.Module:
    torch.manual_seed(0)
    return SimpleViT((1, 8, 8), 3, patch=4, dim=16, depth=2, heads=2, mlp_dim=32).double()


MODELS = {  # name -> (model and batches, expected blocks)
    "mha": (lambda: (SelfAttention().double(), token_data()), 2),
    "mha-no-bias": (lambda: (SelfAttention(bias=False).double(), token_data()), 2),
    "mha-kdim": (lambda: (SelfAttention(kdim=12).double(), token_data()), 2),
    "mha-bias-kv": (lambda: (SelfAttention(bias_kv=True).double(), token_data()), 2),
    "fused-qkv": (lambda: (Tokens(FusedQKV()).double(), token_data()), 2),
    "simple-vit": (lambda: (simple_vit(), image_data()), 4),
    "bert": (bert, 4),
    "vit-hf": (vit_hf, 2),
}


def spec(geometry: str, **kw: object) -> Spec:
    fields: dict = {"rho": 0.05, "n_iters": 12, **kw}
    return Spec(case="worst", norm="l2", geometry=geometry, **fields)


@pytest.mark.parametrize("name", list(MODELS))
def test_blocks_are_found(name: str) -> None:
    build, expected = MODELS[name]
    model, _ = build()
    assert len(find_blocks(model)) == expected, describe_blocks(model)


@pytest.mark.parametrize("name", list(MODELS))
def test_geodesic_sharpness_is_invariant_and_adaptive_sharpness_is_not(name: str) -> None:
    build, _ = MODELS[name]
    model, batches = build()
    base = {g: measure(model, batches, spec(g)) for g in ("flat", "inv", "mix")}
    assert base["inv"].value > 0 and base["mix"].value > 0
    flat_moves = []
    for scale in (1e-2, 1.0, 1e2):
        other = reparametrised(model, scale)
        out = [model(*b[:1]) if isinstance(b, tuple) else model(**{k: v for k, v in b.items() if k != "labels"})
               for b in batches[:1]]
        moved = [other(*b[:1]) if isinstance(b, tuple) else other(**{k: v for k, v in b.items() if k != "labels"})
                 for b in batches[:1]]
        logits = [getattr(o, "logits", o) for o in out], [getattr(o, "logits", o) for o in moved]
        assert torch.allclose(logits[0][0], logits[1][0], rtol=1e-9, atol=1e-9)  # the same function
        for geometry in ("inv", "mix"):
            r = measure(other, batches, spec(geometry))
            assert r.value == pytest.approx(base[geometry].value, rel=1e-8), (geometry, scale)
            assert r.radius <= 0.05
        flat_moves.append(abs(measure(other, batches, spec("flat")).value / base["flat"].value - 1))
    assert max(flat_moves) > 0.01


def test_a_network_without_attention_gets_flat_adaptive_sharpness_bit_for_bit() -> None:
    model, (x, y) = mlp(), classification_data()
    flat = measure(model, (x, y), Spec(case="worst", norm="l2", rho=0.1, m=32, n_examples=64, init="random",
                                      n_restarts=2))
    for geometry in ("inv", "mix"):
        curved = measure(model, (x, y), flat.spec.replace(geometry=geometry))
        assert curved.per_batch == flat.per_batch and curved.radius == flat.radius
        assert curved.error_increase == flat.error_increase
        assert curved.details["geodesic"]["blocks"] == []


def orthonormal_design(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    return q


def sum_of_squares(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out - target) ** 2).sum()


@pytest.fixture
def diagonal() -> dict:
    """A diagonal net away from its minimum, on a design with X^T X = I."""
    d = 6
    x = orthonormal_design(20, d, seed=0)
    g = torch.Generator().manual_seed(1)
    sign = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0).double()
    beta_star = sign * (1 + torch.rand(d, generator=g, dtype=torch.float64))
    u = 0.5 + torch.rand(d, generator=g, dtype=torch.float64)
    v = (beta_star + 0.3 * torch.randn(d, generator=g, dtype=torch.float64)) / u  # |beta0| well above 0
    return {"x": x, "y": x @ beta_star, "beta_star": beta_star, "net": DiagonalNet(u, v), "beta0": u * v}


def diagonal_value(diagonal: dict, geometry: str, rho: float) -> float:
    s = Spec(case="worst", norm="l2", rho=rho, n_iters=60, geometry=geometry)
    return measure(diagonal["net"], [(diagonal["x"], diagonal["y"])], s, loss_fn=sum_of_squares).value


def exact_inv(diagonal: dict, rho: float) -> float:
    """max over ||b|| <= rho / sqrt(2) of sum beta0^2 (e^{4b} - 1) - 2 beta0 beta* (e^{2b} - 1), by SLSQP."""
    b0, bs = diagonal["beta0"].numpy(), diagonal["beta_star"].numpy()
    r = rho / math.sqrt(2)

    def neg(b: np.ndarray) -> float:
        return -float(np.sum(b0 ** 2 * (np.exp(4 * b) - 1) - 2 * b0 * bs * (np.exp(2 * b) - 1)))

    grad = 2 * b0 * (b0 - bs)
    res = scipy.optimize.minimize(neg, r * grad / np.linalg.norm(grad), method="SLSQP", tol=1e-14,
                                  constraints=[{"type": "ineq", "fun": lambda b: r ** 2 - b @ b}])
    return -res.fun


@pytest.mark.parametrize("geometry", ["inv", "mix"])
def test_diagonal_nets_match_the_exact_geodesic_closed_forms_to_third_order(diagonal: dict, geometry: str) -> None:
    def exact(rho: float) -> float:
        if geometry == "mix":  # 2 sqrt(2) rho ||beta0 - beta*|| + 2 rho^2
            return 2 * math.sqrt(2) * rho * float((diagonal["beta0"] - diagonal["beta_star"]).norm()) + 2 * rho ** 2
        return exact_inv(diagonal, rho)

    errors = []
    for rho in (0.04, 0.02):
        ours, truth = diagonal_value(diagonal, geometry, rho), exact(rho)
        assert ours == pytest.approx(truth, rel=2e-2)
        errors.append(abs(ours - truth))
    assert errors[0] / errors[1] > 5  # O(rho^3): x8 for half the radius


def test_diagonal_net_blocks_are_its_coordinate_pairs(diagonal: dict) -> None:
    assert describe_blocks(diagonal["net"]) == "gl1: 6 heads of GL(1): G = u[0:6]; H = v[0:6]"


def test_reported_points_are_feasible_in_the_metric_from_random_starts() -> None:
    model, batches = MODELS["mha"][0]()
    for geometry in ("inv", "mix"):
        r = measure(model, batches, spec(geometry, init="random", n_restarts=3, rho=0.5))
        assert 0 < r.radius <= 0.5


def test_model_comes_back_bit_for_bit() -> None:
    model, batches = MODELS["mha-bias-kv"][0]()
    model.train()
    before = snapshot(model)
    measure(model, batches, spec("mix", second_order="all"))
    assert_restored(model, before)


def test_partial_selection_leaves_a_block_elementwise() -> None:
    model, batches = MODELS["fused-qkv"][0]()
    r = measure(model, batches, spec("inv", params=r"proj|head"))
    assert r.details["geodesic"]["blocks"] == [] and len(r.details["geodesic"]["skipped"]) == 2


def test_query_key_normalisation_removes_only_that_block() -> None:
    kinds = [b.kind for b in find_blocks(Tokens(FusedQKV(qk_norm=True)))]
    assert kinds == ["vo"]


def test_unfolded_biases_break_exact_invariance_folded_ones_keep_it() -> None:
    model, batches = MODELS["mha"][0]()
    other = reparametrised(model, 1.0)
    folded = [measure(m, batches, spec("inv")).value for m in (model, other)]
    loose = [measure(m, batches, spec("inv", fold_bias=False)).value for m in (model, other)]
    assert folded[0] == pytest.approx(folded[1], rel=1e-9)
    assert abs(loose[0] / loose[1] - 1) > 1e-6


def test_second_order_options_change_the_point_map() -> None:
    model, batches = MODELS["mha"][0]()
    values = {o: measure(model, batches, spec("inv", second_order=o, rho=0.3)).value for o in ("blocks", "all", "none")}
    assert len(set(values.values())) == 3


def test_fast_mode_runs_the_exact_geodesic_search_and_says_so() -> None:
    model, batches = MODELS["mha"][0]()
    exact = measure(model, batches, spec("mix"))
    quick = measure(model, batches, spec("mix"), mode="fast")
    assert quick.value == exact.value
    assert quick.details["fast"]["path"].startswith("exact")


def test_rank_deficient_block_needs_relaxation() -> None:
    model, batches = MODELS["mha"][0]()
    with torch.no_grad():
        model.attn.in_proj_weight[0:4].zero_()  # the queries of head 0: G has rank 1 (its bias row)
    with pytest.raises(SharpnessError, match="gram_eps"):
        measure(model, batches, spec("inv"))
    r = measure(model, batches, spec("inv", gram_eps=1e-3))
    assert r.value > 0 and r.radius <= 0.05


def test_declared_blocks_are_used() -> None:
    class Bilinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.a = nn.Parameter(torch.randn(3, 5, generator=g, dtype=torch.float64))
            self.b = nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x @ self.a.T @ self.b.T)

        def sharpness_blocks(self, fold_bias: bool) -> list[Block]:
            # b a = G H^T with G = b (4 x 3), H = a^T (5 x 3): one GL(3) block
            return [Block("", "ab", 1, 3, (Piece("b", axis=1),), (Piece("a", axis=0),))]

    model = Bilinear()
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(2))
    base = measure(model, [(x, y)], spec("inv"))
    other = reparametrised(model, 1.0, seed=3)
    assert torch.allclose(model(x), other(x))
    assert measure(other, [(x, y)], spec("inv")).value == pytest.approx(base.value, rel=1e-8)


@pytest.mark.parametrize(("text", "needle"), [
    ("average-l2-elementwise:rho=0.1,geometry=inv", "case='average'"),
    ("worst-linf-elementwise:rho=0.1,geometry=mix", "norm='linf'"),
    ("worst-l2-standard:rho=0.1,geometry=inv", "scaling='standard'"),
    ("worst-l2-elementwise:rho=0.1,gram_eps=0.1", "applies only to geodesic"),
    ("worst-l2-elementwise:rho=0.1,second_order=all", "applies only to geodesic"),
    ("worst-l2-elementwise:rho=0.1,geometry=curved", "unknown geometry"),
    ("worst-l2-elementwise:rho=0.1,geometry=inv,gram_eps=-1", "gram_eps must be >= 0"),
])
def test_bad_specs_name_the_fields(text: str, needle: str) -> None:
    with pytest.raises(SharpnessError, match=needle.replace("(", r"\(")):
        Spec.parse(text)


def test_spec_string_round_trips_and_flat_ids_are_unchanged() -> None:
    s = Spec.parse("worst-l2-elementwise:rho=0.1,geometry=inv,gram_eps=0.001")
    assert Spec.parse(str(s)) == s and str(s) == "worst-l2-elementwise:rho=0.1,geometry=inv,gram_eps=0.001"
    assert str(Spec(case="worst", norm="l2", rho=0.1)) == "worst-l2-elementwise:rho=0.1"


def test_float32_search_on_badly_conditioned_heads_stays_feasible_and_nearly_invariant() -> None:
    model, batches = MODELS["mha"][0]()
    model = model.float()
    batches = [(x.float(), y) for x, y in batches]
    other = reparametrised(copy.deepcopy(model).double(), 1.0).float()  # random GL(4) per head
    for geometry in ("inv", "mix"):
        s = spec(geometry, init="random", n_restarts=2)
        base, moved = measure(model, batches, s), measure(other, batches, s)
        assert base.radius <= s.rho and moved.radius <= s.rho
        assert moved.details["geodesic"]["metric_condition"] > 100 * base.details["geodesic"]["metric_condition"]
        assert moved.value == pytest.approx(base.value, rel=1e-3)
