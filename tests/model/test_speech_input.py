"""Encoder + adapter into a tiny random Llama: placeholders from the task formats, embed_inputs,
a loss whose gradients reach the adapter (not the frozen encoder), count-mismatch errors, and a
speech input saved beside a bundle that still loads after the bundle moves."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, WavLMConfig, WavLMModel

from tokunify.core.vocab import UnifiedVocab, continuous_stream, units_stream
from tokunify.model.speech_input import (
    SpeechInput,
    SpeechInputError,
    embed_inputs,
    has_speech_input,
    load_speech_input,
    save_speech_input,
)
from tokunify.tasks import TaskOptions, Utterance, make_task

H = 32  # LM hidden size
SAMPLES = [6400, 4000]  # two wavs at 16 kHz
WAVLM = dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
             conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
             feat_extract_norm="layer", num_buckets=16)  # fmt: skip  # 800 Hz frames


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wavlm") / "wavlm"
    torch.manual_seed(0)
    WavLMModel(WavLMConfig(**WAVLM)).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def vocab() -> UnifiedVocab:
    return UnifiedVocab(100, (units_stream("units", 8), continuous_stream("enc")))


def tiny_llama(vocab: UnifiedVocab) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab.size, hidden_size=H, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=vocab.pad)  # fmt: skip
    return LlamaForCausalLM(cfg)


def wavs(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in SAMPLES]


def batch(vocab: UnifiedVocab, frames: list[int], hybrid: bool = False):
    """ASR examples whose encoder stream holds ``frames`` placeholders, right-padded."""
    opts = TaskOptions(stream="units", input_streams=("units", "enc") if hybrid else ("enc",))
    task = make_task("asr", vocab, opts)
    built = [
        task.build(Utterance(text=np.array([5, 6, 7]),
                             speech={"enc": np.asarray(n), "units": np.array([1, 2])}))
        for n in frames
    ]  # fmt: skip
    n = max(len(ids) for ids, _ in built)
    ids = torch.full((len(built), n), vocab.pad)
    labels = torch.full((len(built), n), -100)
    for i, (x, m) in enumerate(built):
        ids[i, : len(x)] = torch.from_numpy(x)
        labels[i, : len(x)] = torch.where(torch.from_numpy(m), torch.from_numpy(x), -100)
    return ids, labels, ids != vocab.pad


@pytest.mark.parametrize(("adapter", "options"), [("conv", {}), ("qformer", {"window": 8, "hidden": 16, "heads": 2, "layers": 1})])  # fmt: skip
def test_loss_and_gradients_reach_the_adapter(encoder_dir, vocab, adapter, options):
    lm = tiny_llama(vocab)
    torch.manual_seed(1)
    si = SpeechInput.build(encoder_dir, H, adapter, layer="weighted", adapter_options=options)
    speech, lengths = si(wavs())  # [B, T', H]
    assert lengths.tolist() == si.output_lengths(SAMPLES).tolist()
    ids, labels, attn = batch(vocab, lengths.tolist(), hybrid=True)
    embeds = embed_inputs(lm, ids, speech, vocab.placeholder("enc"), lengths)
    # the rows that are not placeholders are the LM's own embeddings; the others the speech frames
    plain = lm.get_input_embeddings()(ids)
    is_ph = ids == vocab.placeholder("enc")
    torch.testing.assert_close(embeds[~is_ph], plain[~is_ph])
    torch.testing.assert_close(embeds[1][is_ph[1]], speech[1, : lengths[1]])
    loss = lm(inputs_embeds=embeds, attention_mask=attn, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.any() for p in si.adapter.parameters())
    assert si.encoder.layer_weights.grad is not None
    assert all(p.grad is None for p in si.encoder.model.parameters())  # frozen


def test_placeholder_count_mismatch_names_the_row(vocab):
    lm = tiny_llama(vocab)
    ids, _, _ = batch(vocab, [4, 7])
    speech = torch.randn(2, 7, H)
    with pytest.raises(SpeechInputError, match="row 1: 7 placeholders but 6 speech frames"):
        embed_inputs(lm, ids, speech, vocab.placeholder("enc"), torch.tensor([4, 6]))
    with pytest.raises(SpeechInputError, match="row 0: speech frames of shape"):
        embed_inputs(
            lm, ids, [torch.randn(4, H + 1), torch.randn(7, H + 1)], vocab.placeholder("enc")
        )
    # several utterances packed into one row: their frames concatenated in order
    rows = [torch.randn(4, H), torch.randn(7, H)]
    out = embed_inputs(lm, ids, rows, vocab.placeholder("enc"))
    torch.testing.assert_close(out[1][ids[1] == vocab.placeholder("enc")], rows[1])


def test_saved_beside_a_bundle_and_moved(encoder_dir, tmp_path):
    torch.manual_seed(2)
    si = SpeechInput.build(encoder_dir, H, "stack", layer=1, freeze=False, adapter_options={"k": 3})
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    save_speech_input(bundle, si)
    assert has_speech_input(bundle)
    moved = shutil.move(str(bundle), str(tmp_path / "elsewhere"))
    back = load_speech_input(moved)
    assert back.stream == "enc" and back.encoder.layer == 1 and back.encoder.freeze is False
    assert back.adapter.config == si.adapter.config
    si.eval(), back.eval()
    with torch.no_grad():
        (a, na), (b, nb) = si(wavs()), back(wavs())
    torch.testing.assert_close(a, b)
    assert na.tolist() == nb.tolist()
    assert back.frame_rate == pytest.approx(800 / 3)
    (tmp_path / "elsewhere" / "speech_input" / "adapter" / "adapter.json").unlink()
    with pytest.raises(SpeechInputError, match="adapter.json: missing"):
        load_speech_input(moved)
    with pytest.raises(SpeechInputError, match="speech_input.json: missing"):
        load_speech_input(tmp_path)
