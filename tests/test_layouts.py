from __future__ import annotations

import numpy as np
import pytest
import torch

from tokunify.layouts import LAYOUTS, LayoutError, get_layout

EMPTY = -1


def slow_build(name: str, codes: np.ndarray) -> list[int]:
    """Reference: explicit loops, written from the layout definitions."""
    n_q, t = codes.shape
    out: list[int] = []
    if name == "flatten":
        for f in range(t):
            for q in range(n_q):
                out.append(int(codes[q, f]))
    elif name == "delay":
        for s in range(t + n_q - 1 if t else 0):
            for q in range(n_q):
                f = s - q
                out.append(int(codes[q, f]) if 0 <= f < t else EMPTY)
    elif name == "first":
        out = [int(c) for c in codes[0]]
    return out


def random_codes(n_q: int, t: int, seed: int = 0) -> np.ndarray:
    # Distinct id ranges per codebook, as global ids have.
    rng = np.random.default_rng(seed)
    return rng.integers(0, 100, size=(n_q, t)) + 1000 * np.arange(n_q)[:, None]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize("n_q", [1, 2, 8])
@pytest.mark.parametrize("t", [0, 1, 7])
def test_build_matches_reference_and_reverts(name, n_q, t):
    layout = get_layout(name)
    codes = random_codes(n_q, t)
    seq = layout.build(codes, EMPTY)
    assert seq.tolist() == slow_build(name, codes)
    assert len(seq) == layout.length(t, n_q)
    back = layout.revert(seq, n_q, EMPTY)
    expect = codes[:1] if name == "first" else codes
    assert back.shape == expect.shape and np.array_equal(back, expect)
    # torch path gives the same
    tseq = layout.build(torch.from_numpy(codes), EMPTY)
    assert tseq.tolist() == seq.tolist()
    assert torch.equal(layout.revert(tseq, n_q, EMPTY), torch.from_numpy(expect))


@pytest.mark.parametrize("name", ["flatten", "delay"])
def test_codebook_at_matches_positions(name):
    n_q, t = 4, 6
    layout = get_layout(name)
    seq = layout.build(random_codes(n_q, t), EMPTY)
    want = layout.codebook_at(np.arange(len(seq)), n_q)
    real = seq // 1000
    filled = seq != EMPTY
    assert np.array_equal(real[filled], want[filled])


@pytest.mark.parametrize("name", ["flatten", "delay"])
def test_length_not_multiple_of_n_q_raises(name):
    layout = get_layout(name)
    seq = layout.build(random_codes(3, 4), EMPTY)
    with pytest.raises(LayoutError, match="not a multiple of n_q=3"):
        layout.revert(seq[:-1], 3, EMPTY)


def test_delay_rejects_misplaced_empty():
    layout = get_layout("delay")
    seq = layout.build(random_codes(2, 3), EMPTY)
    seq[0], seq[1] = seq[1], seq[0]  # swap a code with the fill
    with pytest.raises(LayoutError, match="empty tokens"):
        layout.revert(seq, 2, EMPTY)


def test_unknown_layout():
    with pytest.raises(LayoutError, match="unknown codebook layout"):
        get_layout("zigzag")
