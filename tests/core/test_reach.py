"""Leaving out the embedding rows an m-batch never looks up changes no value, and happens only where sound."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sharpness import Spec, measure, reach


class Bag(nn.Module):
    """Token embedding, mean over positions, linear head; ``tie`` shares the embedding with a decoder,
    ``functional`` also reads the embedding outside its module, ``keyword`` calls it by keyword."""

    def __init__(self, tie: bool = False, functional: bool = False, keyword: bool = False,
                 max_norm: float | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(200, 16, max_norm=max_norm)
        self.pos = nn.Embedding(8, 16)
        self.head = nn.Linear(16, 3)
        self.decoder = nn.Linear(16, 200, bias=False)
        if tie:
            self.decoder.weight = self.emb.weight
        self.functional, self.keyword, self.tie = functional, keyword, tie

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(input=ids) if self.keyword else self.emb(ids)
        x = (x + self.pos(torch.arange(ids.shape[1]))).mean(dim=1)
        if self.functional:
            x = x + 0.1 * (F.softmax(x @ self.emb.weight.T, dim=-1) @ self.emb.weight)
        if self.tie:
            x = x + 0.1 * F.softmax(self.decoder(x), dim=-1) @ self.emb.weight
        return self.head(x)


def data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 200, (n, 8), generator=g), torch.randint(0, 3, (n,), generator=g)


SPECS = [Spec(case="worst", norm="linf", rho=0.05, m=16, n_examples=32, n_iters=8),
         Spec(case="worst", norm="l2", rho=0.5, m=16, n_examples=32, n_iters=8),
         Spec(case="worst", norm="linf", rho=0.02, m=32, n_examples=32, n_iters=6, scaling="standard")]


def restrictions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the row spaces made (how many m-batches were searched in reduced coordinates)."""
    made: list[int] = []
    original = reach.RowSpace.__init__

    def counting(self: reach.RowSpace, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        made.append(self.numel)

    monkeypatch.setattr(reach.RowSpace, "__init__", counting)
    return made


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_leaving_out_unread_rows_changes_no_value(spec: Spec, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, xy = Bag(), data()
    before = copy.deepcopy(model.state_dict())
    made = restrictions(monkeypatch)
    reduced = measure(model, xy, spec, mode=mode)
    total = sum(p.numel() for p in model.parameters())
    # every m-batch searched alone, its word-embedding rows cut to those it looks up (all 8 positions are)
    assert len(made) == spec.n_examples // spec.m and all(total - 200 * 16 < n < total for n in made)
    if spec.m == spec.n_examples:
        assert made == [total - (200 - torch.unique(xy[0]).numel()) * 16]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored bit for bit
    monkeypatch.setattr(reach, "embeddings", lambda model, space: {})
    full = measure(model, xy, spec, mode=mode)
    if spec.norm == "linf":  # elementwise arithmetic on the same iterates: the same bits
        assert (reduced.value, reduced.radius, reduced.per_batch) == (full.value, full.radius, full.per_batch)
    else:  # norms sum fewer zeros: the last bits may differ
        assert reduced.value == pytest.approx(full.value, rel=1e-5)
        assert reduced.radius == pytest.approx(full.radius, rel=1e-6)


@pytest.mark.parametrize("variant, restricted", [
    ({}, {"emb", "pos"}),
    ({"tie": True}, {"pos"}),  # a tied weight is read by the decoder too
    ({"max_norm": 1.0}, {"pos"}),  # max_norm rewrites the rows it reads
])
def test_only_plain_unshared_embeddings_qualify(variant: dict, restricted: set[str]) -> None:
    from sharpness.space import WeightSpace

    model = Bag(**variant)
    named = list(model.named_parameters())
    space = WeightSpace([p for _, p in named], [n for n, _ in named], "elementwise", 0.01, {})
    found = reach.embeddings(model, space)
    assert {name for name, module in model.named_children() if module in found} == restricted


@pytest.mark.parametrize("variant", [{"functional": True}, {"keyword": True}], ids=["functional", "keyword"])
def test_an_embedding_read_another_way_is_searched_whole(variant: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[0]
    model, xy = Bag(**variant), data()
    guarded = measure(model, xy, spec)
    monkeypatch.setattr(reach, "embeddings", lambda model, space: {})
    assert guarded.value == measure(model, xy, spec).value


def test_random_starts_keep_every_coordinate(monkeypatch: pytest.MonkeyPatch) -> None:
    made = restrictions(monkeypatch)
    spec = Spec(case="worst", norm="linf", rho=0.05, m=16, n_examples=32, n_iters=4, init="random")
    measure(Bag(), data(), spec)
    assert made == []


AVERAGE = [Spec(case="average", norm="l2", rho=0.3, m=16, n_examples=32, n_iters=6),
           Spec(case="average", norm="linf", rho=0.3, m=16, n_examples=32, n_iters=4, antithetic=True),
           Spec(case="average", norm="l2", rho=0.2, m=32, n_examples=32, n_iters=3, scaling="standard")]


def every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every m-batch keep every row of every embedding (as if each were read some other way)."""
    original = reach.recorded

    @contextlib.contextmanager
    def all_rows(found: dict, rows: dict) -> Iterator[None]:
        with original(found, rows):
            yield
        rows.update(dict.fromkeys(rows))

    monkeypatch.setattr(reach, "recorded", all_rows)


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("spec", AVERAGE, ids=str)
def test_draws_over_read_rows_are_the_whole_draws_there(spec: Spec, mode: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model, xy = Bag(), data()
    before = copy.deepcopy(model.state_dict())
    made = restrictions(monkeypatch)
    reduced = measure(model, xy, spec, mode=mode)
    assert len(made) == spec.n_examples // spec.m and reduced.details["draw_stream"] == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    every_row(monkeypatch)
    whole = measure(model, xy, spec, mode=mode)
    assert made[-1] == sum(p.numel() for p in model.parameters()) > made[0]
    # the read rows hold the same numbers and the unread ones cannot change the loss: the same bits
    assert (reduced.value, reduced.per_batch, reduced.stderr) == (whole.value, whole.per_batch, whole.stderr)


def test_models_without_embeddings_keep_the_sequential_stream() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(0)
    xy = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    spec = Spec(case="average", norm="l2", rho=0.1, m=16, n_examples=32, n_iters=4)
    assert measure(model, xy, spec).details["draw_stream"] == 1
    assert measure(Bag(), data(), spec.replace(params=r"^head\.")).details["draw_stream"] == 1


def test_stream_two_draws_have_the_stated_distribution() -> None:
    from sharpness.average_case import Addressed

    shapes = [torch.Size([3000, 64]), torch.Size([7])]
    layout = Addressed(shapes, {0: torch.arange(3000)})
    g = torch.Generator().manual_seed(0)
    normal = layout.draw(torch.empty(3000 * 64 + 7), "l2", 2.0, g)[:-7].double()
    assert abs(float(normal.mean())) < 5 * 2.0 / (3000 * 64) ** 0.5
    assert float(normal.std()) == pytest.approx(2.0, rel=0.01)
    assert float((normal.abs() > 2.0 * 1.96).double().mean()) == pytest.approx(0.05, abs=0.003)
    box = layout.draw(torch.empty(3000 * 64 + 7), "linf", 0.5, g)[:-7].double()
    assert float(box.min()) >= -0.5 and float(box.max()) < 0.5
    assert float(box.var()) == pytest.approx(1.0 / 12, rel=0.01)
    # rows of one draw are independent: neighbouring rows uncorrelated
    rows = normal.view(3000, 64)
    assert abs(float((rows[:-1] * rows[1:]).mean())) / 4.0 < 5 / (2999 * 64) ** 0.5


class Reads(nn.Module):
    """Three embeddings: one looked up by keyword, one also read as a matrix, one never read."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_up, self.as_matrix, self.unread = nn.Embedding(50, 4), nn.Embedding(50, 4), nn.Embedding(50, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.looked_up(input=ids) + self.as_matrix(ids)
        return x.mean(dim=1) @ self.as_matrix.weight[:4]


def test_every_way_a_weight_is_read_is_seen() -> None:
    from sharpness.space import WeightSpace

    model = Reads()
    named = list(model.named_parameters())
    space = WeightSpace([p for _, p in named], [n for n, _ in named], "elementwise", 0.0, {})
    found = reach.embeddings(model, space)
    rows: dict = {}
    ids = torch.tensor([[7, 3, 7], [40, 3, 1]])
    with reach.recorded(found, rows), torch.no_grad():
        model(ids)
    by_name = {name: rows[found[module]] for name, module in model.named_children()}
    assert torch.equal(by_name["looked_up"], torch.tensor([1, 3, 7, 40]))
    assert by_name["as_matrix"] is None  # indexed as a matrix: every row counts
    assert by_name["unread"].numel() == 0
