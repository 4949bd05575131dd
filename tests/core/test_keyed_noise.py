"""Keyed noise: the int64 tensor arithmetic is the scalar SplitMix64, and each number depends on its address only."""

from __future__ import annotations

import pytest
import torch

from sharpness import keyed_noise as kn

EDGES = [0, 1, 2, 12345, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0x9E3779B97F4A7C15, 0xDEADBEEFCAFEF00D]


@pytest.mark.parametrize("word", EDGES, ids=hex)
def test_tensor_mix_is_the_scalar_finaliser(word: int) -> None:
    got = kn.mix(torch.tensor([kn.to_signed(word)], dtype=torch.int64))
    assert kn.to_unsigned(int(got[0])) == kn.mix_int(word)


@pytest.mark.parametrize("key", [0, 7, (1 << 64) - 1], ids=hex)
def test_words_follow_their_definition(key: int) -> None:
    rows = torch.tensor([0, 5, 30521])
    z = kn.words(key, rows, 3)
    for i, r in enumerate(rows.tolist()):
        h = kn.mix_int(key + r * kn.GAMMA)
        for j in range(3):
            assert kn.to_unsigned(int(z[i, j])) == kn.mix_int(h + j * kn.GAMMA)


def test_a_row_gets_its_numbers_wherever_it_sits_and_however_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    every = kn.fill(torch.empty(100, 6), 99, torch.arange(100), "normal")
    monkeypatch.setattr(kn, "CHUNK_ELEMENTS", 12)  # two rows per chunk
    some = kn.fill(torch.empty(3, 6), 99, torch.tensor([42, 3, 97]), "normal")
    assert torch.equal(some, every[[42, 3, 97]])
    assert not torch.equal(kn.fill(torch.empty(3, 6), 100, torch.tensor([42, 3, 97]), "normal"), some)


def test_uniforms_are_the_24_bit_grid_of_the_unit_interval() -> None:
    u = kn.fill(torch.empty(1000, 100), 1, torch.arange(1000), "uniform")
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert torch.equal(u * 2 ** 24, (u * 2 ** 24).round())
    assert float(u.double().mean()) == pytest.approx(0.5, abs=5 * (1 / 12 / u.numel()) ** 0.5)
