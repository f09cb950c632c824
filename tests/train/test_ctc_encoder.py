"""train-encoder --ctc: tiny random Conformer/Transformer CTC encoders trained through the CLI on the
session's espeak corpus, then loaded as a SpeechEncoder and in plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCTC, AutoProcessor, AutoTokenizer

from tokunify.cli import main
from tokunify.core.config import from_dict, read_data_file
from tokunify.core.textnorm import normalize
from tokunify.data.audio import load
from tokunify.data.manifest import Entry, read_manifest, write_manifest
from tokunify.model.encoders import SpeechEncoder
from tokunify.tokenizers.text import load_text_tokenizer
from tokunify.train.ctc_encoder import (
    ARCHS,
    CHAR_SPECIALS,
    CharTargets,
    CTCEncoderConfig,
    CTCTrainError,
    char_vocab,
    ctc_frames_needed,
    greedy_ctc,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ctc"
TINY = dict(  # config fields over the arch's preset, small enough for a few CPU seconds
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=[16, 32, 64],
    conv_depthwise_kernel_size=7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
OVERFIT_STEPS = 30


def train_encoder(manifest: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["train-encoder", str(manifest), "--ctc", "--out", str(out), "--model", str(model),
                 "--batch-size", "2", "--log-every", "1", "--device", "cpu", *extra])  # fmt: skip


def wavs_of(manifest: Path, n: int) -> list[np.ndarray]:
    return [load(e.audio, 16000) for e in list(read_manifest(manifest))[:n]]


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ctc") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


@pytest.fixture(scope="module")
def two_utterances(speech_manifest, tmp_path_factory) -> Path:
    """Two utterances of different sentences from the session corpus (the overfit set)."""
    rows = list(read_manifest(speech_manifest))
    picked = [rows[0], next(e for e in rows if e.text != rows[0].text)]
    return write_manifest(picked, tmp_path_factory.mktemp("ctc-two") / "two.jsonl")


@pytest.fixture(scope="module")
def overfit_dir(two_utterances, tiny_cfg, tmp_path_factory) -> Path:
    """A Conformer on characters, trained 30 steps on two utterances and decoded on them."""
    out = tmp_path_factory.mktemp("ctc-run") / "enc"
    rc = train_encoder(two_utterances, out, tiny_cfg, "--steps", str(OVERFIT_STEPS), "--lr", "1e-2",
                       "--warmup-steps", "3", "--mask-time-prob", "0", "--dev", str(two_utterances))  # fmt: skip
    assert rc == 0
    return out


def test_char_vocab_and_frames_needed():
    vocab = char_vocab(["ab a", "ca"])
    assert list(vocab) == [*CHAR_SPECIALS, "a", "b", "c"] and vocab["<pad>"] == 0
    assert ctc_frames_needed([5, 5, 6]) == 4  # a blank must part the repeated 5s
    assert ctc_frames_needed([5, 6, 7]) == 3


def test_greedy_ctc_collapses_repeats_then_drops_blanks():
    frames = torch.eye(4)[[1, 1, 0, 1, 2, 2, 0, 0, 3]]  # [T, V], argmax per frame
    assert greedy_ctc(frames, blank=0) == [1, 1, 2, 3]
    assert greedy_ctc(torch.eye(4)[[0, 0]], blank=0) == []


def test_loss_goes_down_when_overfitting_two_utterances(overfit_dir):
    rows = [json.loads(x) for x in (overfit_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step" in r]
    assert [r["step"] for r in steps] == list(range(1, OVERFIT_STEPS + 1))
    first = np.mean([r["loss"] for r in steps[:3]])
    last = np.mean([r["loss"] for r in steps[-3:]])
    assert last < 0.5 * first, (first, last)
    dev = rows[-1]
    assert dev["utterances"] == 2 and 0.0 <= dev["cer"] <= 1.0
    decodes = [json.loads(x) for x in (overfit_dir / "dev.jsonl").read_text().splitlines()]
    assert [d["ref"] for d in decodes] == [normalize(e.text) for e in read_manifest(dev["dev"])]
    info = json.loads((overfit_dir / "ctc_encoder.json").read_text())
    assert info["dev_cer"] == dev["cer"] and info["targets"]["kind"] == "chars"


def test_saved_dir_loads_as_a_speech_encoder(overfit_dir, speech_manifest):
    wavs = wavs_of(speech_manifest, 3)
    enc = SpeechEncoder.from_pretrained(overfit_dir, layer=-1)
    assert enc.family.name == "wav2vec2-conformer" and enc.dim == TINY["hidden_size"]
    assert enc.frame_rate == 50.0
    feats, lengths = enc(wavs)  # [3, T, D], [3]
    assert torch.equal(lengths, enc.output_lengths([len(w) for w in wavs]))
    assert feats.shape == (3, int(lengths.max()), TINY["hidden_size"])
    ctc = AutoModelForCTC.from_pretrained(overfit_dir).eval()
    fe = AutoProcessor.from_pretrained(overfit_dir).feature_extractor
    for b, w in enumerate(wavs):  # the real forward of each wav alone
        x = fe(w, sampling_rate=16000, return_tensors="pt")["input_values"]
        with torch.no_grad():
            out = ctc(input_values=x, output_hidden_states=True)
        assert out.logits.shape[1] == lengths[b]
        torch.testing.assert_close(feats[b, : lengths[b]], out.hidden_states[-1][0])


def test_saved_dir_loads_in_plain_transformers(overfit_dir, two_utterances):
    assert AutoConfig.from_pretrained(overfit_dir).architectures == ["Wav2Vec2ConformerForCTC"]
    model = AutoModelForCTC.from_pretrained(overfit_dir).eval()
    processor = AutoProcessor.from_pretrained(overfit_dir)
    assert model.config.vocab_size == len(processor.tokenizer)
    assert model.config.pad_token_id == processor.tokenizer.pad_token_id == 0  # the blank
    hyps = []
    for w in wavs_of(two_utterances, 2):
        x = processor(w, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            hyps.append(processor.batch_decode(model(**x).logits.argmax(-1))[0])
    decodes = [json.loads(x) for x in (overfit_dir / "dev.jsonl").read_text().splitlines()]
    assert [normalize(h) for h in hyps] == [d["hyp"] for d in decodes]  # same greedy decode


def test_transformer_on_text_tokenizer_pieces(speech_manifest, sp_dir, tiny_cfg, tmp_path):
    out = tmp_path / "enc"
    rc = train_encoder(speech_manifest, out, tiny_cfg, "--arch", "transformer", "--steps", "2",
                       "--targets", "text-tokenizer", "--text-tokenizer", str(sp_dir))  # fmt: skip
    assert rc == 0
    n = len(load_text_tokenizer(sp_dir))
    model = AutoModelForCTC.from_pretrained(out)
    assert type(model).__name__ == "Wav2Vec2ForCTC"
    assert model.config.vocab_size == n + 1 and model.config.pad_token_id == n  # blank after pieces
    assert len(AutoTokenizer.from_pretrained(out)) == n  # the text tokenizer, saved beside
    enc = SpeechEncoder.from_pretrained(out)
    wavs = wavs_of(speech_manifest, 3)
    feats, lengths = enc(wavs)
    assert enc.family.name == "wav2vec2"
    assert torch.equal(lengths, enc.output_lengths([len(w) for w in wavs]))
    alone, _ = enc(wavs[1:2])  # the Transformer pads exactly: a batched wav gives its own frames
    torch.testing.assert_close(feats[1, : lengths[1]], alone[0], atol=1e-5, rtol=1e-4)
    assert sum(1 for _ in (out / "log.jsonl").open()) == 2


def test_shipped_config_runs(two_utterances, tiny_cfg, tmp_path):
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert [f.name for f in files] == ["conformer_chars.yaml"]
    cfg = from_dict(CTCEncoderConfig, {**read_data_file(files[0]), "manifest": "m", "out": "o"})
    assert cfg.ctc and cfg.arch in ARCHS and cfg.model == "tiny"
    out = tmp_path / "enc"
    args = ["train-encoder", str(two_utterances), "--config", str(files[0]), "--out", str(out)]
    assert main([*args, "--model", str(tiny_cfg), "--steps", "2", "--batch-size", "2"]) == 0
    assert json.loads((out / "ctc_encoder.json").read_text())["config"]["lr"] == cfg.lr


def _manifest(path: Path, texts: list[str | None], audio: Path) -> Path:
    return write_manifest(
        [Entry(id=f"r{i}", audio=audio, text=t) for i, t in enumerate(texts)], path
    )


def test_unusable_rows_are_left_out_with_a_reason(two_utterances, tiny_cfg, tmp_path):
    rows = list(read_manifest(two_utterances))
    (tmp_path / "broken.wav").write_bytes(b"not a wav")
    extra = [
        Entry(id="silent", audio=rows[0].audio, text=None),
        Entry(id="broken", audio=tmp_path / "broken.wav", text="hello"),
        Entry(id="tiny", audio=rows[0].audio, start=0.0, end=0.05, text="far too many letters"),
    ]
    manifest = write_manifest([*rows, *extra], tmp_path / "mixed.jsonl")
    assert train_encoder(manifest, tmp_path / "enc", tiny_cfg, "--steps", "1") == 0
    rejects = {
        r["id"]: r["reason"]
        for r in map(json.loads, (tmp_path / "enc" / "rejects.jsonl").read_text().splitlines())
    }
    assert set(rejects) == {"silent", "broken", "tiny"}
    assert "no transcript" in rejects["silent"] and "CTC frames" in rejects["tiny"]
    info = json.loads((tmp_path / "enc" / "ctc_encoder.json").read_text())
    assert info["utterances"] == 2


def test_bad_input_is_one_line(speech_manifest, sp_dir, tiny_cfg, tmp_path, capsys):
    wav = next(read_manifest(speech_manifest)).audio
    no_text = _manifest(tmp_path / "no_text.jsonl", [None, ""], wav)
    punct = _manifest(tmp_path / "punct.jsonl", ["!!!", "..."], wav)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    cases = [
        (tmp_path / "missing.jsonl", [], "missing.jsonl: manifest not found"),
        (no_text, [], "no row has a transcript ('text' field) of 2 rows"),
        (punct, [], "no row has a transcript"),
        (speech_manifest, ["--targets", "text-tokenizer"], "needs --text-tokenizer DIR"),
        (speech_manifest, ["--targets", "text-tokenizer", "--text-tokenizer", str(tmp_path / "nope")], "cannot load a text tokenizer"),
        (speech_manifest, ["--model", str(tmp_path / "nope.yaml")], "nope.yaml"),
    ]  # fmt: skip
    for manifest, extra, message in cases:
        assert train_encoder(manifest, tmp_path / "o", tiny_cfg, "--steps", "1", *extra) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
    assert train_encoder(speech_manifest, taken, tiny_cfg, "--steps", "1") == 1
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["train-encoder", str(speech_manifest), "--out", str(tmp_path / "o")]) == 1
    assert "give --ctc" in capsys.readouterr().err


def test_transcripts_without_characters_give_an_empty_vocabulary():
    with pytest.raises(CTCTrainError, match="empty vocabulary"):
        CharTargets(["", " "])
    assert CharTargets(["ab"]).vocab_size == len(CHAR_SPECIALS) + 2
