"""Speech encoders on tiny random transformers models saved to a temp dir, through the real
loading code: true output lengths, padding, layer choice (weighted sum learnable), freezing,
resampling, save/load, the train-ssl output, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2ConformerConfig,
    Wav2Vec2ConformerModel,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from tokunify.model.encoders import EncoderError, SpeechEncoder
from tokunify.train.ssl import HubertPretraining, HubertPretrainingHead, save_encoder

D = 32
CONV = dict(conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4))  # 200 Hz
TINY = dict(hidden_size=D, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **CONV)  # fmt: skip
WHISPER = WhisperConfig(
    d_model=D, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
    max_source_positions=50, max_target_positions=16, vocab_size=64, pad_token_id=0,
    bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
)  # fmt: skip  # window: 100 mel frames = 1 s
LENGTHS = [16000, 4321, 800]  # samples at 16 kHz


def _build(kind: str):
    if kind == "whisper":
        return WhisperForConditionalGeneration(WHISPER)
    if kind == "wavlm":  # LayerNorm front-end: batched with an attention mask
        return WavLMModel(WavLMConfig(feat_extract_norm="layer", num_buckets=16, **TINY))
    if kind == "hubert":  # GroupNorm front-end: one wav at a time
        return HubertModel(HubertConfig(**TINY))
    if kind == "wav2vec2":
        return Wav2Vec2Model(Wav2Vec2Config(feat_extract_norm="layer", **TINY))
    return Wav2Vec2ConformerModel(
        Wav2Vec2ConformerConfig(feat_extract_norm="layer", conv_depthwise_kernel_size=3, **TINY)
    )


FAMILIES = ["whisper", "wavlm", "hubert", "wav2vec2", "wav2vec2-conformer"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for kind in FAMILIES:
        torch.manual_seed(0)
        _build(kind).save_pretrained(root / kind)
        out[kind] = str(root / kind)
    return out


def wavs(lengths=LENGTHS, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]


@pytest.mark.parametrize("kind", FAMILIES)
def test_output_lengths_are_the_true_frames(kind, saved):
    enc = SpeechEncoder.from_pretrained(saved[kind], layer=-1)
    want = enc.output_lengths(LENGTHS)
    with torch.no_grad():
        feats, lengths = enc(wavs())
        assert lengths.tolist() == want.tolist()
        assert feats.shape == (3, int(want.max()), D)
        for i, w in enumerate(
            wavs()
        ):  # alone: the frames the real model gives, and the same values
            alone, n = enc([w])
            assert n.tolist() == [want[i]] and alone.shape[1] == want[i]
            torch.testing.assert_close(feats[i, : want[i]], alone[0], atol=1e-4, rtol=1e-4)
            assert not feats[i, want[i] :].any()
            if kind == "whisper":  # the feature extractor's mask counts the mel frames with audio
                fe = enc.feature_extractor
                mask = fe(w, sampling_rate=16000, return_attention_mask=True)["attention_mask"]
                assert (int(mask.sum()) - 1) // 2 + 1 == want[i]
            else:
                model = enc.model
                raw = model(torch.from_numpy(w)[None]).last_hidden_state
                assert raw.shape[1] == want[i]
    assert enc.frame_rate == 50.0 if kind == "whisper" else enc.frame_rate == 200.0


def test_layers_and_the_learned_weighted_sum(saved):
    enc = SpeechEncoder.from_pretrained(saved["wavlm"], layer=0)
    with torch.no_grad():
        x = torch.from_numpy(wavs([3200])[0])[None]
        states = enc.model(x, output_hidden_states=True).hidden_states
        torch.testing.assert_close(enc([x[0].numpy()])[0], states[0])
        weighted = SpeechEncoder.from_pretrained(saved["wavlm"], layer="weighted")
        torch.testing.assert_close(weighted([x[0].numpy()])[0], torch.stack(states).mean(0))
    opt = torch.optim.SGD([weighted.layer_weights], lr=1.0)
    before = weighted.layer_weights.detach().clone()
    feats, _ = weighted(wavs([3200, 2000]))
    feats[..., 0].sum().backward()
    assert weighted.layer_weights.grad is not None and weighted.layer_weights.grad.any()
    opt.step()
    assert not torch.equal(weighted.layer_weights, before)


@pytest.mark.parametrize("freeze", [True, False])
def test_a_frozen_encoder_gets_no_gradients(saved, freeze):
    enc = SpeechEncoder.from_pretrained(saved["hubert"], layer="weighted", freeze=freeze).train()
    assert enc.model.training is not freeze
    feats, _ = enc(wavs([2000, 1600]))
    feats.pow(2).mean().backward()
    grads = [p.grad for p in enc.model.parameters()]
    if freeze:
        assert all(g is None for g in grads)
    else:
        assert any(g is not None and g.any() for g in grads)
    assert enc.layer_weights.grad is not None


def test_other_sample_rates_are_resampled(saved):
    enc = SpeechEncoder.from_pretrained(saved["wav2vec2"])
    with torch.no_grad():
        _, lengths = enc(wavs([4000, 8000]), sample_rate=[8000, 16000])
    assert lengths.tolist() == enc.output_lengths([8000, 8000]).tolist()


def test_save_and_load_back(saved, tmp_path):
    for kind in ("whisper", "wavlm"):
        enc = SpeechEncoder.from_pretrained(saved[kind], layer="weighted")
        enc.layer_weights.data = torch.arange(3.0)
        enc.save(tmp_path / kind)
        back = SpeechEncoder.from_pretrained(tmp_path / kind, layer="weighted")
        assert torch.equal(back.layer_weights, enc.layer_weights)
        with torch.no_grad():
            torch.testing.assert_close(back(wavs())[0], enc(wavs())[0])
    # Whisper is saved as its encoder only
    keys = load_file(str(tmp_path / "whisper" / "model.safetensors")).keys()
    assert keys and not any("decoder" in k for k in keys)
    assert json.loads((tmp_path / "whisper" / "config.json").read_text())["architectures"] == [
        "WhisperEncoder"
    ]


def test_train_ssl_output_loads(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(feat_extract_norm="layer", **TINY))
    head = HubertPretrainingHead(D, num_classes=10, final_dim=16, logit_temp=0.1)
    out = save_encoder(HubertPretraining(model, head), tmp_path / "encoder", {"steps": 0})
    enc = SpeechEncoder.from_pretrained(out, layer=1)
    assert enc.family.name == "hubert" and enc.num_layers == 2
    with torch.no_grad():
        feats, lengths = enc(wavs())
    assert lengths.tolist() == enc.output_lengths(LENGTHS).tolist() and feats.shape[-1] == D


def test_errors_are_one_line(saved, tmp_path):
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, vocab_size=50)).save_pretrained(tmp_path / "bert")  # fmt: skip
    with pytest.raises(
        EncoderError,
        match=r"model type 'bert' is not a supported speech encoder; supported: \['hubert'",
    ):
        SpeechEncoder.from_pretrained(tmp_path / "bert")
    with pytest.raises(EncoderError, match="no such directory"):
        SpeechEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(EncoderError, match="layer must be 'weighted' or an int in"):
        SpeechEncoder.from_pretrained(saved["hubert"], layer=7)
    enc = SpeechEncoder.from_pretrained(saved["whisper"])
    with pytest.raises(
        EncoderError,
        match=r"audio 1: 1.50 s is longer than the Whisper encoder's window \(1.00 s\)",
    ):
        enc(wavs([100, 24000]))
    with pytest.raises(EncoderError, match="audio 0: empty audio"):
        enc([np.zeros(0, np.float32)])
