"""The likelihood scorer: batched == slow reference, and each convention does what its formula says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokunify.core.vocab import UnifiedVocab, codec_stream, units_stream
from tokunify.eval.slm.scoring import (
    Conventions,
    ScoredSequence,
    cross_modal_sequence,
    pair_scores,
    reference_scores,
    score_sequences,
    speech_sequence,
    text_sequence,
)
from tokunify.model.extend import scratch_model

TEXT, K, N_Q, C = 40, 12, 3, 8
CONVENTIONS = [
    Conventions(n, s, c)
    for n in ("sum", "mean")
    for s in ("full", "modality")
    for c in ("first", "all")
]


@pytest.fixture(scope="module")
def units_lm():
    v = UnifiedVocab(text_size=TEXT, streams=(units_stream("units", K),))
    return v, scratch_model("llama-tiny", v, seed=1).eval()


@pytest.fixture(scope="module", params=["flatten", "delay"])
def codec_lm(request):
    v = UnifiedVocab(text_size=TEXT, streams=(codec_stream("codec", N_Q, C, request.param),))
    return v, scratch_model("llama-tiny", v, seed=2).eval()


def _unit_seqs(v, n=7, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [speech_sequence(v, "units", rng.integers(0, K, rng.integers(3, 30))) for _ in range(n)]
    seqs.append(text_sequence(v, rng.integers(0, TEXT, 4), rng.integers(0, TEXT, 5)))
    seqs.append(
        cross_modal_sequence(
            v, ("units", rng.integers(0, K, 9)), ("text", rng.integers(0, TEXT, 3))
        )
    )
    seqs.append(
        cross_modal_sequence(
            v, ("text", rng.integers(0, TEXT, 5)), ("units", rng.integers(0, K, 6))
        )
    )
    return seqs


@pytest.mark.parametrize(
    "conv", [c for c in CONVENTIONS if c.codebooks == "all"], ids=str
)  # no codebooks in units
def test_batched_equals_reference_units(units_lm, conv):
    v, model = units_lm
    seqs = _unit_seqs(v)
    fast = score_sequences(model, v, seqs, conv, batch_size=4)
    slow = reference_scores(model, v, seqs, conv)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("conv", CONVENTIONS, ids=str)
def test_batched_equals_reference_codec(codec_lm, conv):
    v, model = codec_lm
    rng = np.random.default_rng(3)
    seqs = [
        speech_sequence(v, "codec", rng.integers(0, C, (N_Q, rng.integers(2, 9)))) for _ in range(5)
    ]
    np.testing.assert_allclose(
        score_sequences(model, v, seqs, conv, batch_size=2),
        reference_scores(model, v, seqs, conv),
        rtol=1e-4,
        atol=1e-4,
    )


def _token_logps(model, seq: ScoredSequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-vocabulary log-softmax rows [T-1, V] and the target ids [T-1]."""
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(seq.ids)[None]).logits[0, :-1].double()
    return torch.log_softmax(logits, -1), torch.from_numpy(seq.ids[1:])


def test_conventions_follow_their_formulas(units_lm):
    v, model = units_lm
    seq = speech_sequence(v, "units", np.array([3, 1, 4, 1, 5, 9, 2, 6]))
    lp, tgt = _token_logps(model, seq)
    span = slice(seq.start - 1, seq.end - 1)  # rows predicting the scored ids
    tok = lp.gather(-1, tgt[:, None]).squeeze(-1)[span]
    n = seq.end - seq.start
    s = lambda **kw: float(score_sequences(model, v, [seq], Conventions(**kw))[0])  # noqa: E731
    # sum: the raw log-likelihood of the 8 units; mean: divided by their number
    assert s(normalize="sum") == pytest.approx(float(tok.sum()), abs=1e-4)
    assert s(normalize="mean") == pytest.approx(float(tok.sum()) / n, abs=1e-5)
    # modality: renormalised over unit ids, i.e. minus log P(unit id) at each position: higher
    allowed = v.mask("units")
    z = torch.logsumexp(lp[span][:, allowed], -1)
    assert s(normalize="sum", softmax="modality") == pytest.approx(float((tok - z).sum()), abs=1e-4)
    assert s(normalize="sum", softmax="modality") > s(normalize="sum")


def test_codebooks_first_scores_codebook_zero_only(codec_lm):
    v, model = codec_lm
    codes = np.random.default_rng(5).integers(0, C, (N_Q, 6))
    seq = speech_sequence(v, "codec", codes)
    lp, tgt = _token_logps(model, seq)
    tok = lp.gather(-1, tgt[:, None]).squeeze(-1)
    first = v.codebook_table[tgt.numpy()] == 0
    a, b = v.stream_range("codec")
    real = (tgt.numpy() >= a) & (tgt.numpy() < b)
    score = lambda c: float(score_sequences(model, v, [seq], Conventions("sum", "full", c))[0])  # noqa: E731
    assert first.sum() == 6 and real.sum() == 6 * N_Q
    assert score("first") == pytest.approx(
        float(tok[torch.from_numpy(first & real)].sum()), abs=1e-4
    )
    assert score("all") == pytest.approx(float(tok[torch.from_numpy(real)].sum()), abs=1e-4)
    assert score("all") < score("first")  # more (negative) terms


def test_pair_scores_count_ties_as_half():
    np.testing.assert_array_equal(pair_scores([1.0, 2.0, -3.0], [0.5, 2.0, -1.0]), [1.0, 0.5, 0.0])


def test_bad_convention_is_refused():
    with pytest.raises(ValueError, match="--normalize"):
        Conventions(normalize="median")
