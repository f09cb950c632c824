"""`tokunify eval`: normaliser, generative metrics, tokenizer-hash refusal, an independent ASR
(a tiny random Whisper built here) and a text LM for GenPPL (a tiny random GPT-2 built here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tokunify.cli import main
from tokunify.eval.generative import (
    auto_bleu,
    normalize,
    text_perplexity,
    transcribe,
    unit_ttr,
    wer,
)

WHISPER_SPECIALS = [
    "<|startoftranscript|>",
    "<|en|>",
    "<|transcribe|>",
    "<|translate|>",
    "<|notimestamps|>",
]


def test_normaliser_keeps_non_english_text():
    assert normalize("Привет, мир!") == "привет мир"
    assert normalize("Ça  va, très bien.") == "ça va très bien"
    assert normalize("What's UP?") == normalize("what s up")
    assert wer(["你好 世界"], ["你好 世界"]) == 0.0
    assert wer(["ça va très bien"], ["ça va"]) == pytest.approx(0.5)


def test_auto_bleu_and_unit_ttr():
    assert auto_bleu(["a", "b", "c", "d"]) == 0.0
    assert auto_bleu(["a", "b", "a", "b"]) == pytest.approx(2 / 3)  # (a b) twice of 3 bigrams
    assert np.isnan(auto_bleu(["a"]))
    assert unit_ttr(np.array([1, 1, 2, 3])) == 0.75 and unit_ttr(np.array([[1, 2], [1, 2]])) == 0.5


@pytest.fixture(scope="module")
def text_lm(bpe_tokenizer_dir, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=128)
    )
    out = tmp_path_factory.mktemp("text-lm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_text_perplexity_matches_the_model_loss(text_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = (
        AutoModelForCausalLM.from_pretrained(text_lm).eval(),
        AutoTokenizer.from_pretrained(text_lm),
    )
    texts = ["the cat sat", "what is two plus three"]
    ids = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts]
    with torch.no_grad():
        losses = [
            float(model(input_ids=torch.tensor([x]), labels=torch.tensor([x])).loss) * (len(x) - 1)
            for x in ids
        ]
    expected = np.exp(sum(losses) / sum(len(x) - 1 for x in ids))
    assert text_perplexity(model, tok, texts) == pytest.approx(expected, rel=1e-4)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    """A tiny random Whisper (1+1 layers, d=16) with a 300-piece byte-level BPE, saved like a hub model."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    out = tmp_path_factory.mktemp("whisper")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["the cat sat on the mat", "what is two plus three"] * 20,
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
    )
    bpe.save_model(str(out))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "WhisperTokenizer"}))
    tok = WhisperTokenizer.from_pretrained(out)
    tok.add_special_tokens(
        {"pad_token": "<|endoftext|>", "additional_special_tokens": WHISPER_SPECIALS}
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in ["<|endoftext|>", *WHISPER_SPECIALS]}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_source_positions=1500, max_target_positions=32, decoder_start_token_id=sot,
                        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot)  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
                                               no_timestamps_token_id=ids["<|notimestamps|>"], max_length=12,
                                               begin_suppress_tokens=[], suppress_tokens=[])  # fmt: skip
    model.save_pretrained(out)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


def test_transcribe_resamples_and_batches_like_single_calls(whisper_dir):
    from transformers import pipeline

    from tokunify.data.audio import resample

    pipe = pipeline("automatic-speech-recognition", model=str(whisper_dir))
    rng = np.random.default_rng(0)
    wavs = [
        0.1 * rng.standard_normal(n).astype(np.float32) for n in (22050, 11025, 30000)
    ]  # 22.05 kHz in
    got = transcribe(pipe, wavs, 22050, batch_size=3)
    single = [
        pipe(resample(w, 22050, 16000))["text"] for w in wavs
    ]  # a bare array is taken as 16 kHz
    assert got == single and len(got) == 3


def test_external_asr_metrics_on_espeak_audio(whisper_dir, speech_manifest):
    import soundfile as sf
    from transformers import pipeline

    from tokunify.data.manifest import read_manifest
    from tokunify.eval.generative import external_asr_metrics

    entries = list(read_manifest(speech_manifest))[:2]
    wavs, srs = zip(*(sf.read(e.audio, dtype="float32") for e in entries), strict=True)
    r = external_asr_metrics(pipeline("automatic-speech-recognition", model=str(whisper_dir)), list(wavs), srs[0],
                             [e.text for e in entries], batch_size=2)  # fmt: skip
    assert r["external_wer"] >= 0.5  # a random recogniser: mostly wrong, never NaN
    assert [x["ref"] for x in r["external_examples"]] == [e.text for e in entries]


@pytest.mark.slow  # ~20 s idle, minutes on a loaded 2-core machine: TTS + continuation generation
def test_eval_external_asr_and_generative_metrics(
    voc_bundle, train_store, whisper_dir, text_lm, tmp_path
):
    out = tmp_path / "eval"
    assert main(["eval", str(voc_bundle), "--store", str(train_store), "--out", str(out), "--max-utts", "2",
                 "--tasks", "tts", "continue", "--asr-model", str(whisper_dir), "--text-lm", str(text_lm)]) == 0  # fmt: skip
    r = json.loads((out / "eval.json").read_text())["store"]
    assert (
        np.isfinite(r["tts_external_wer"])
        and r["tts_external_wer"] >= 0
        and "tts_roundtrip_wer" in r
    )
    assert r["continue_transcriber"] == "external"
    assert r["continue_genppl"] > 1.0 or np.isnan(
        r["continue_genppl"]
    )  # NaN only when nothing was heard
    assert 0.0 < r["continue_unit_ttr"] <= 1.0
    assert "tts_external_wer" in (out / "eval.md").read_text()


def _tamper(store: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    shutil.copytree(store, dst)
    meta = json.loads((dst / "store.json").read_text())
    edit(meta)
    (dst / "store.json").write_text(json.dumps(meta))
    return dst


def test_eval_refuses_stores_of_other_tokenizers(train_bundle, train_store, tmp_path, capsys):
    other_units = _tamper(
        train_store, tmp_path / "a", lambda m: m["streams"]["units"].update(hash="0123456789abcdef")
    )
    assert (
        main(
            [
                "eval",
                str(train_bundle),
                "--store",
                str(other_units),
                "--out",
                str(tmp_path / "e"),
                "--tasks",
                "asr",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert (
        "was made by tokenizer 0123456789abcdef" in err.strip().splitlines()[-1]
    )  # one line, no traceback
    assert "Traceback" not in err
    other_text = _tamper(
        train_store, tmp_path / "b", lambda m: m["text_tokenizer"].update(hash="feedfeedfeedfeed")
    )
    assert (
        main(
            [
                "eval",
                str(train_bundle),
                "--store",
                str(other_text),
                "--out",
                str(tmp_path / "e"),
                "--tasks",
                "asr",
            ]
        )
        == 1
    )
    assert "another text tokenizer" in capsys.readouterr().err
