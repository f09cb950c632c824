"""The continuous (encoder-input) stream kind: one placeholder id, input only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tokunify.core.vocab import (
    MARKER,
    STREAM_BASE,
    StreamSpec,
    UnifiedVocab,
    VocabError,
    continuous_stream,
    units_stream,
)

TEXT_SIZE = 1000
K = 50

# vocab.json as the tokunify of before continuous streams wrote it (one units stream, K=50).
OLD_VOCAB_JSON = {
    "format": "tokunify.vocab",
    "version": 1,
    "text_size": 1000,
    "specials": ["pad", "bos", "eos", "text_start", "text_end", "empty"],
    "tasks": ["text", "speech", "asr", "tts", "s2s", "continue", "interleave"],
    "streams": [{"name": "units", "kind": "units", "size": 50}],
    "pad_to_multiple_of": 64,
    "size": 1088,
    "ranges": {
        "special": 1000,
        "marker": 1006,
        "task": 1008,
        "stream:units": 1015,
        "reserved": 1065,
    },
}


@pytest.fixture
def vocab() -> UnifiedVocab:
    # the continuous stream first: default_stream must still be the units stream
    return UnifiedVocab(TEXT_SIZE, (continuous_stream("enc"), units_stream("units", K)))


def test_continuous_stream_owns_exactly_one_named_id(vocab):
    a, b = vocab.stream_range("enc")
    assert b - a == 1 and vocab.placeholder("enc") == a
    assert vocab.placeholder_ids() == [a]
    strings = vocab.token_strings()
    assert strings[a - TEXT_SIZE] == "<|enc_frame|>"
    assert strings[vocab.stream_start("enc") - TEXT_SIZE] == "<|enc_start|>"
    assert len(set(strings)) == len(strings) == vocab.size - TEXT_SIZE
    assert vocab.kind_table[a] == STREAM_BASE + 0
    assert vocab.modality_of(np.array([a]))[0] == vocab.modality_code("enc")
    assert vocab.kind_table[vocab.stream_start("enc")] == MARKER
    # the units stream follows the placeholder directly
    assert vocab.stream_range("units")[0] == b


def test_placeholder_local_global(vocab):
    p = vocab.placeholder("enc")
    assert vocab.to_global("enc", np.zeros(4, np.int64)).tolist() == [p] * 4
    assert vocab.to_local("enc", torch.full((3,), p)).tolist() == [0, 0, 0]
    with pytest.raises(VocabError, match="enc"):
        vocab.to_global("enc", np.array([1]))
    with pytest.raises(VocabError, match="enc"):
        vocab.to_local("enc", np.array([p + 1]))
    with pytest.raises(VocabError, match="units stream"):
        vocab.placeholder("units")


def test_default_stream_skips_continuous(vocab):
    assert vocab.default_stream == "units"
    assert vocab.stream_start() == vocab.stream_start("units")
    only = UnifiedVocab(TEXT_SIZE, (continuous_stream("enc"),))
    assert only.default_stream == "enc"


def test_input_only_mask_and_modality_masks(vocab):
    p = vocab.placeholder("enc")
    banned = vocab.input_only_mask()
    assert banned.sum() == 3
    assert banned[[p, vocab.stream_start("enc"), vocab.stream_end("enc")]].all()
    assert not banned[vocab.stream_start("units")]
    assert vocab.mask("enc").nonzero().flatten().tolist() == [p]
    assert not vocab.mask("units", "text")[p]


@pytest.mark.parametrize("kwargs", [{"size": 2}, {"codebooks": 2}])
def test_continuous_spec_checks(kwargs):
    with pytest.raises(VocabError, match="enc"):
        StreamSpec(name="enc", kind="continuous", **{"size": 1, **kwargs})


def test_round_trip_and_old_files_load(vocab, tmp_path):
    d = vocab.to_dict()
    assert {"name": "enc", "kind": "continuous", "size": 1} in d["streams"]
    back = UnifiedVocab.load(vocab.save(tmp_path))
    assert back == vocab and back.token_strings() == vocab.token_strings()
    old = UnifiedVocab.from_json(json.dumps(OLD_VOCAB_JSON))
    assert old.size == OLD_VOCAB_JSON["size"]
    assert old.to_dict()["ranges"] == OLD_VOCAB_JSON["ranges"]
    assert old.input_only_ids() == [] and old.placeholder_ids() == []
