from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokunify.core.vocab import (
    DEFAULT_TASKS,
    SPECIALS,
    UnifiedVocab,
    VocabError,
    codec_stream,
    units_stream,
)

TEXT_SIZE = 1000
K = 50
N_Q, C = 3, 16


@pytest.fixture
def vocab() -> UnifiedVocab:
    return UnifiedVocab(
        TEXT_SIZE, (units_stream("units", K), codec_stream("codec", N_Q, C, "delay"))
    )


def test_layout_is_contiguous_and_padded(vocab):
    assert vocab.size % 64 == 0 and vocab.size >= vocab.num_used
    strings = vocab.token_strings()
    assert len(strings) == vocab.size - TEXT_SIZE == vocab.num_new
    assert len(set(strings)) == len(strings)
    assert vocab.special("pad") == TEXT_SIZE
    assert vocab.stream_range("units") == (
        vocab.task(DEFAULT_TASKS[-1]) + 1,
        vocab.task(DEFAULT_TASKS[-1]) + 1 + K,
    )
    assert vocab.stream_range("codec") == (
        vocab.stream_range("units")[1],
        vocab.stream_range("units")[1] + N_Q * C,
    )
    assert vocab.num_used == vocab.stream_range("codec")[1]
    named = [vocab.special(s) for s in SPECIALS] + [vocab.task(t) for t in vocab.tasks]
    named += [vocab.stream_start(s) for s in ("units", "codec")] + [
        vocab.stream_end(s) for s in ("units", "codec")
    ]
    assert len(set(named)) == len(named)
    assert all(TEXT_SIZE <= i < vocab.stream_range("units")[0] for i in named)
    # token strings sit at their ids
    assert strings[vocab.task("asr") - TEXT_SIZE] == "<|task:asr|>"
    assert strings[vocab.to_global("units", np.array([7]))[0] - TEXT_SIZE] == "<|units:7|>"
    g = vocab.to_global("codec", np.array([[1], [2], [3]]))
    assert strings[g[2, 0] - TEXT_SIZE] == "<|codec:2:3|>"
    assert strings[-1].startswith("<|reserved:")


def test_pad_to_multiple():
    v = UnifiedVocab(100, (units_stream("u", 1),), pad_to_multiple_of=64)
    assert v.size == 128
    assert UnifiedVocab(100, (units_stream("u", 1),), pad_to_multiple_of=1).size == v.num_used


@pytest.mark.parametrize("as_torch", [False, True])
def test_local_global_round_trip(vocab, as_torch):
    rng = np.random.default_rng(0)
    units = rng.integers(0, K, size=(4, 37))
    codes = rng.integers(0, C, size=(N_Q, 29))
    if as_torch:
        units, codes = torch.from_numpy(units), torch.from_numpy(codes)
    gu = vocab.to_global("units", units)
    gc = vocab.to_global("codec", codes)
    assert type(gu) is type(units)
    lo, hi = vocab.stream_range("units")
    assert int(gu.min()) >= lo and int(gu.max()) < hi
    for q in range(N_Q):
        a, b = vocab.codebook_range("codec", q)
        assert int(gc[q].min()) >= a and int(gc[q].max()) < b
    assert (vocab.to_local("units", gu) == units).all()
    assert (vocab.to_local("codec", gc) == codes).all()
    assert vocab.codebook_table[np.asarray(gc)].tolist() == [[q] * 29 for q in range(N_Q)]


def test_mapping_rejects_bad_ids(vocab):
    with pytest.raises(VocabError, match=r"\[0, 50\)"):
        vocab.to_global("units", np.array([0, K]))
    with pytest.raises(VocabError, match="units"):
        vocab.to_local("units", np.array([vocab.eos]))
    codes = vocab.to_global("codec", np.zeros((N_Q, 4), dtype=np.int64))
    with pytest.raises(VocabError, match="foreign"):
        vocab.to_local("codec", codes[::-1].copy())  # codebook rows swapped
    with pytest.raises(VocabError, match=r"\[n_q, T\]"):
        vocab.to_global("codec", np.zeros(5, dtype=np.int64))
    with pytest.raises(VocabError, match="unknown stream"):
        vocab.to_global("nope", np.zeros(1, dtype=np.int64))


def test_masks(vocab):
    text = vocab.mask("text")
    assert text.dtype == torch.bool and text.shape == (vocab.size,)
    assert int(text.sum()) == TEXT_SIZE and bool(text[:TEXT_SIZE].all())
    units = vocab.mask("units")
    assert int(units.sum()) == K and bool(units[slice(*vocab.stream_range("units"))].all())
    both = vocab.mask("text", "units")
    assert torch.equal(both, text | units)
    cb = vocab.codebook_mask("codec", 1)
    assert int(cb.sum()) == C and bool(cb[slice(*vocab.codebook_range("codec", 1))].all())
    assert int(vocab.mask("task").sum()) == len(vocab.tasks)
    assert int(vocab.mask("reserved").sum()) == vocab.size - vocab.num_used
    total = sum(
        int(vocab.mask(m).sum())
        for m in ("text", "special", "marker", "task", "reserved", "units", "codec")
    )
    assert total == vocab.size
    ids = torch.tensor([0, vocab.eos, vocab.task("asr")])
    assert vocab.modality_of(ids).tolist() == [0, 1, 3]


def test_named_id_errors(vocab):
    with pytest.raises(VocabError, match="unknown task tag 'sing'"):
        vocab.task("sing")
    with pytest.raises(VocabError, match="unknown special"):
        vocab.special("mask")
    with pytest.raises(VocabError, match="stream name"):
        units_stream("Bad Name", 3)
    with pytest.raises(VocabError, match="duplicate stream"):
        UnifiedVocab(10, (units_stream("a", 2), units_stream("a", 3)))


def test_json_round_trip(vocab, tmp_path):
    p = vocab.save(tmp_path)
    assert p.name == "vocab.json"
    d = json.loads(p.read_text())
    assert d["version"] == 1 and d["format"] == "tokunify.vocab"
    assert UnifiedVocab.load(tmp_path) == vocab
    assert UnifiedVocab.from_json(vocab.to_json()).token_strings() == vocab.token_strings()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(format="x"), "not a tokunify vocab"),
        (lambda d: d.update(size=d["size"] + 64), "stored size"),
        (lambda d: d["specials"].reverse(), "special tokens"),
        (lambda d: d.pop("text_size"), "malformed"),
    ],
)
def test_json_errors_name_the_file(vocab, tmp_path, edit, match):
    d = vocab.to_dict()
    edit(d)
    (tmp_path / "vocab.json").write_text(json.dumps(d))
    with pytest.raises(VocabError, match=match) as e:
        UnifiedVocab.load(tmp_path)
    assert "vocab.json" in str(e.value)


def test_missing_vocab_json(tmp_path):
    with pytest.raises(VocabError, match="no vocab.json"):
        UnifiedVocab.load(tmp_path)


def test_check_tokenizer_and_model(vocab):
    class Tok:
        def __init__(self, strings):
            self.table = {s: i for i, s in enumerate(strings)}

        def __len__(self):
            return len(self.table)

        def convert_tokens_to_ids(self, toks):
            return [self.table.get(t, 0) for t in toks]

    good = [f"t{i}" for i in range(TEXT_SIZE)] + vocab.token_strings()
    vocab.check_tokenizer(Tok(good))
    swapped = list(good)
    i, j = vocab.task("asr"), vocab.task("tts")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    with pytest.raises(VocabError, match=r"<\|task:asr\|>"):
        vocab.check_tokenizer(Tok(swapped))
    with pytest.raises(VocabError, match="tokenizer has"):
        vocab.check_tokenizer(Tok(good[:-1]))

    class Cfg:
        vocab_size = vocab.size + 64

    with pytest.raises(VocabError, match="vocab_size"):
        vocab.check_model_config(Cfg(), "my-model")


def test_task_name_and_prefix_answer_position_questions():
    v = UnifiedVocab(100, (units_stream("units", 10),))
    for t in v.tasks:
        assert v.task_name(v.task(t)) == t
        assert v.prefix(t).tolist() == [v.bos, v.task(t)] and len(v.prefix(t)) == v.prefix_len
    for bad in (v.bos, v.stream_range("units")[0], v.task(v.tasks[-1]) + 1):
        with pytest.raises(VocabError, match="is not a task tag"):
            v.task_name(bad)
