from __future__ import annotations

import pytest
import sentencepiece as spm
from helpers import sentences
from transformers import AutoTokenizer

from tokunify.tokenizers.text import TextTokenizerError, load_text_tokenizer, train_sentencepiece

ODD = [
    "  two  leading spaces",
    "tabs\tand\nnewline",
    "émigré naïve 漢字 ✓",
    "numbers 1234 and CAPS",
    "",
]


def test_hf_conversion_matches_sentencepiece(sp_dir):
    sp = spm.SentencePieceProcessor(model_file=str(sp_dir / "spm.model"))
    hf = AutoTokenizer.from_pretrained(sp_dir)
    assert len(hf) == sp.get_piece_size()
    for s in sentences(200, seed=9) + ODD:
        ids = sp.encode(s)
        assert hf.encode(s, add_special_tokens=False) == ids, s
        assert hf.decode(ids) == sp.decode(ids), s


def test_load_from_model_file(sp_dir):
    tok = load_text_tokenizer(sp_dir / "spm.model")
    assert tok.encode("the cat", add_special_tokens=False) == AutoTokenizer.from_pretrained(
        sp_dir
    ).encode("the cat", add_special_tokens=False)
    assert tok.unk_token == "<unk>" and tok.pad_token == "<pad>"


def test_errors_name_the_file(tmp_path):
    with pytest.raises(TextTokenizerError, match="missing.txt"):
        train_sentencepiece(tmp_path / "missing.txt", tmp_path / "out")
    with pytest.raises(TextTokenizerError, match="nowhere"):
        load_text_tokenizer(tmp_path / "nowhere")


def test_train_from_iterable(tmp_path):
    tok = train_sentencepiece(sentences(300, seed=2), tmp_path / "it", vocab_size=320)
    assert (tmp_path / "it" / "spm.model").is_file()
    assert tok.decode(tok.encode("the red cat", add_special_tokens=False)) == "the red cat"
