from __future__ import annotations

import pytest
import torch
from helpers import sentences
from transformers import AutoModelForCausalLM, AutoTokenizer

from tokunify.core.vocab import UnifiedVocab, VocabError, codec_stream, units_stream
from tokunify.model.extend import (
    INIT_CHOICES,
    SCRATCH_PRESETS,
    add_vocab_tokens,
    extend_pretrained,
    freeze_text_rows,
    scratch_model,
)

K = 50


def _load(base_dir):
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    return model, tok


def _vocab(tok) -> UnifiedVocab:
    return UnifiedVocab(len(tok), (units_stream("units", K), codec_stream("codec", 2, 16)))


def _text_batch(tok) -> torch.Tensor:
    ids = [tok.encode(s, add_special_tokens=False)[:8] for s in sentences(4, seed=5)]
    n = min(len(i) for i in ids)
    return torch.tensor([i[:n] for i in ids])


@pytest.mark.parametrize("init", INIT_CHOICES)
def test_text_logits_unchanged(base_model_dir, init):
    model, tok = _load(base_model_dir)
    x = _text_batch(tok)
    with torch.no_grad():
        before = model(x).logits  # [B, T, V_old]
    vocab = _vocab(tok)
    tied_before = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    extend_pretrained(model, tok, vocab, init=init)
    assert (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ) == tied_before
    assert model.get_input_embeddings().weight.shape[0] == vocab.size == len(tok)
    assert vocab.size % 64 == 0
    with torch.no_grad():
        after = model(x).logits  # [B, T, V]
    assert after.shape[-1] == vocab.size
    torch.testing.assert_close(
        after[..., : vocab.text_size], before[..., : vocab.text_size], rtol=0, atol=1e-6
    )


def test_init_choices(base_model_dir):
    stats = {}
    for init in INIT_CHOICES:
        model, tok = _load(base_model_dir)
        old = model.get_input_embeddings().weight[: len(tok)].detach().clone()
        vocab = _vocab(tok)
        extend_pretrained(model, tok, vocab, init=init)
        new = model.get_input_embeddings().weight[vocab.text_size :].detach()
        stats[init] = new
        if init == "mean":
            torch.testing.assert_close(new, old.mean(0, keepdim=True).expand_as(new))
        elif init == "mean+noise":
            assert new.std(0).mean() > 0
            torch.testing.assert_close(new.mean(0), old.mean(0), atol=0.05, rtol=0)
        else:
            assert abs(float(new.std()) - 0.02) < 0.005
    assert not torch.equal(stats["mean"], stats["mean+noise"])


def test_freeze_text_rows(base_model_dir):
    model, tok = _load(base_model_dir)
    vocab = _vocab(tok)
    extend_pretrained(model, tok, vocab, init="mean+noise")
    freeze_text_rows(model, vocab)
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    before_in, before_out = emb.detach().clone(), out.detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    units = vocab.to_global("units", torch.randint(0, K, (2, 6)))
    x = torch.cat([_text_batch(tok)[:2, :4], units], dim=1)
    model.train()
    for _ in range(3):
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    n = vocab.text_size
    assert torch.equal(emb[:n], before_in[:n])
    assert torch.equal(out[:n], before_out[:n])
    assert not torch.equal(emb[n:], before_in[n:])  # the new rows did train


def test_double_extension_refused(base_model_dir):
    model, tok = _load(base_model_dir)
    vocab = _vocab(tok)
    extend_pretrained(model, tok, vocab)
    with pytest.raises(VocabError):
        add_vocab_tokens(tok, UnifiedVocab(len(tok), (units_stream("units", K),)))


def test_tokenizer_round_trip_of_new_tokens(base_model_dir):
    _, tok = _load(base_model_dir)
    vocab = _vocab(tok)
    add_vocab_tokens(tok, vocab)
    ids = [
        vocab.bos,
        vocab.task("asr"),
        vocab.stream_start("units"),
        *vocab.to_global("units", torch.tensor([3, 49])).tolist(),
        vocab.stream_end("units"),
    ]
    text = tok.decode(ids)
    assert "<|task:asr|>" in text and "<|units:49|>" in text
    assert tok.encode(text, add_special_tokens=False) == ids
    # structural tokens are special: hidden when asked
    assert "<|task:asr|>" not in tok.decode(ids, skip_special_tokens=True)
    assert "<|units:3|>" in tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny"])
def test_scratch_presets(preset, sp_dir):
    tok = AutoTokenizer.from_pretrained(sp_dir)
    vocab = _vocab(tok)
    model = scratch_model(preset, vocab)
    assert model.config.vocab_size == vocab.size
    assert model.generation_config.eos_token_id == vocab.eos
    logits = model(torch.tensor([[vocab.bos, vocab.task("tts"), 5]])).logits
    assert logits.shape == (1, 3, vocab.size)
    with pytest.raises(ValueError, match="unknown from-scratch preset"):
        scratch_model("llama-huge", vocab)
    assert {"llama-tiny", "llama-small"} <= set(SCRATCH_PRESETS)


def test_codec_layout_is_any_registered_layout(sp_dir, tmp_path, capsys):
    from tokunify.cli import main
    from tokunify.core.layouts import LAYOUTS, FlattenLayout, register_layout

    base = ["extend", "scratch:llama-tiny", "--text-tokenizer", str(sp_dir), "--codebooks", "2",
            "--codebook-size", "16"]  # fmt: skip
    assert main([*base, "--codec-layout", "zigzag", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "zigzag" in err[-1] and "flatten" in err[-1]  # one line naming the registered ones

    class Zigzag(FlattenLayout):
        name = "zigzag"

    register_layout(Zigzag())
    try:  # no edit to extend.py: a newly registered layout is accepted as it is
        assert main([*base, "--codec-layout", "zigzag", "--out", str(tmp_path / "b")]) == 0
        assert UnifiedVocab.load(tmp_path / "b").stream("codec").layout == "zigzag"
    finally:
        LAYOUTS.pop("zigzag")
