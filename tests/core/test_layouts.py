from __future__ import annotations

import numpy as np
import pytest
import torch

from tokunify.core.layouts import LAYOUTS, FlattenLayout, LayoutError, get_layout, register_layout

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


def _rule_accepts(layout, seq: np.ndarray, n_q: int) -> list[bool]:
    """Feed a built sequence through the layout's step rule, one position at a time, as the
    decoding constraint does; True where the actual token (or, after it, the end) is allowed."""
    ok = []
    seq_t = torch.from_numpy(seq)
    for t in range(len(seq) + 1):
        gen = seq_t[None, :t]
        pos = torch.arange(t)[None]
        closing = layout.closing_step(gen == EMPTY, pos, n_q)
        rule = layout.step_rule(torch.tensor([t]), n_q, closing)
        if t == len(seq):  # the end marker must be allowed right after a whole sequence
            ok.append(bool(rule.end[0]))
            continue
        tok = int(seq[t])
        if bool(rule.end_only[0]):
            ok.append(False)
        elif tok == EMPTY:
            ok.append(bool(rule.fill[0]))
        else:
            ok.append(bool(rule.code[0]) and tok // 1000 == int(rule.codebook[0]))
    return ok


@pytest.mark.parametrize("name", ["flatten", "delay"])
@pytest.mark.parametrize("n_q", [2, 4])
@pytest.mark.parametrize("t", [1, 5])
def test_step_rule_accepts_every_built_sequence(name, n_q, t):
    """The rule the decoder is constrained by accepts exactly what ``build`` lays out."""
    layout = get_layout(name)
    seq = layout.build(random_codes(n_q, t), EMPTY)
    assert all(_rule_accepts(layout, seq, n_q))
    if name == "delay":  # a code where the opening fill belongs, or ending too early: refused
        bad = seq.copy()
        bad[1] = 1000 + 3
        assert not _rule_accepts(layout, bad, n_q)[1]
        assert not _rule_accepts(layout, seq[: len(seq) - n_q], n_q)[-1]
    else:  # ending mid-frame is refused
        assert not _rule_accepts(layout, seq[:-1], n_q)[-1]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_continuation_keeps_whole_steps(name):
    n_q, t = 3, 4
    layout = get_layout(name)
    seq = layout.build(random_codes(n_q, t), EMPTY)
    keep = layout.continuation_length(t, n_q)
    assert keep == (len(seq) - (n_q - 1) * n_q if name == "delay" else len(seq))
    assert layout.is_fixed(n_q) == (name == "first") and layout.is_fixed(1)


class ReversedLayout(FlattenLayout):
    """A toy layout defined only here: frame-major with the codebooks in reverse order."""

    name = "toy_reversed"

    def build(self, codes, empty):
        return codes[::-1].T.reshape(-1)

    def revert(self, seq, n_q, empty):
        return super().revert(seq, n_q, empty)[::-1]

    def codebook_at(self, positions, n_q):
        return n_q - 1 - positions % n_q


def test_a_new_layout_is_one_registered_class():
    """Registered, the toy layout is used by the vocab, the formats and the decoding constraint."""
    from tokunify.core.vocab import UnifiedVocab, codec_stream
    from tokunify.generate.constraints import ModalityConstraint
    from tokunify.tasks import parse_stream_body, stream_body

    register_layout(ReversedLayout())
    try:
        v = UnifiedVocab(50, (codec_stream("codec", 3, 8, "toy_reversed"),))
        codes = np.random.default_rng(0).integers(0, 8, size=(3, 5))
        body = stream_body(v, "codec", codes)
        assert (v.codebook_table[body] == [2, 1, 0] * 5).all()
        assert np.array_equal(parse_stream_body(v, "codec", body), codes)
        g = torch.Generator().manual_seed(0)
        for _ in range(10):
            proc = ModalityConstraint(v, "codec", prompt_len=2)
            ids = torch.tensor([[v.bos, v.stream_start("codec")]])
            for _ in range(40):
                probs = torch.softmax(proc(ids, torch.zeros(1, v.size)), -1)
                ids = torch.cat([ids, torch.multinomial(probs, 1, generator=g)], 1)
                if int(ids[0, -1]) == v.eos:
                    break
            body = ids[0, 2:].tolist()
            if v.stream_end("codec") in body:
                body = body[: body.index(v.stream_end("codec"))]
                assert len(body) % 3 == 0  # ends on a frame boundary only
            body = body[: len(body) // 3 * 3]
            assert (v.codebook_table[body] == [2, 1, 0] * (len(body) // 3)).all()
    finally:
        LAYOUTS.pop("toy_reversed")
    with pytest.raises(ValueError, match="unknown layout .* registered"):
        codec_stream("codec", 3, 8, "toy_reversed")


@pytest.mark.parametrize("name", ["flatten", "delay", "first"])
def test_close_keeps_the_longest_revertible_prefix_of_a_cut_body(name):
    layout, n_q, t, empty = get_layout(name), 3, 5, -1
    codes = np.arange(n_q * t).reshape(n_q, t) + 100  # [n_q, T]
    full = layout.build(codes, empty)
    kept = codes[:1] if name == "first" else codes
    for cut in range(len(full) + 1):
        body = layout.close(full[:cut], n_q, empty)
        back = layout.revert(body, n_q, empty)  # never raises on a closed body
        frames = back.shape[1]
        assert (back == kept[:, :frames]).all()  # a prefix of the frames, nothing invented
        if name != "delay":  # flatten/first lose at most the cut step
            assert frames == cut // layout.emitted_codebooks(n_q)
        else:  # delay keeps every frame whose codebooks were all emitted
            assert frames == max(0, min(t, cut // n_q - n_q + 1))
