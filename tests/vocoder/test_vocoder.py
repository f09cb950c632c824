"""CodeHiFiGAN: parity with the published generator, checkpoint round trip, streaming, training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokunify.model.bundle import BundleError, attach_vocoder
from tokunify.vocoder import (
    CodeHiFiGAN,
    CodeHiFiGANConfig,
    UnitVocoder,
    VocoderError,
    load_codehifigan,
    save_codehifigan,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "codehifigan"


def test_matches_speech_resynthesis_generator():
    """Golden outputs of speech-resynthesis' DurationCodeGenerator / CodeGenerator (tiny random
    weights, weight norm removed as their inference script does), from their g_* checkpoints."""
    golden = load_file(str(ASSETS / "golden.safetensors"))
    dur = UnitVocoder.load(ASSETS / "dur")
    code = golden["dur_code"]
    torch.testing.assert_close(dur.frames([code])[0], golden["dur_frames"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        dur([code])[0], golden["dur_dedup"], atol=1e-6, rtol=1e-5
    )  # predicted durations
    spk = UnitVocoder.load(ASSETS / "spk")
    torch.testing.assert_close(
        spk.frames([golden["spk_code"]], speakers=[5])[0],
        golden["spk_frames"],
        atol=1e-6,
        rtol=1e-5,
    )
    with pytest.raises(VocoderError, match="speakers"):
        spk.frames([code])


def test_checkpoint_round_trip_and_folding(tmp_path):
    model = load_codehifigan(ASSETS / "dur")
    out = save_codehifigan(model, tmp_path / "voc")
    assert json.loads((out / "config.json").read_text())["num_embeddings"] == 20
    keys = load_file(str(out / "generator.safetensors")).keys()
    assert any(k.endswith(".weight_g") for k in keys) and not any(
        "parametrizations" in k for k in keys
    )
    again = load_codehifigan(out)
    code = torch.randint(0, 20, (1, 30))
    with torch.no_grad():
        a, b = model(code), again(code)
        folded = again.fold_weight_norm()(code)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, folded, atol=1e-6, rtol=1e-5)
    (tmp_path / "bad").mkdir()
    shutil.copy(ASSETS / "dur" / "config.json", tmp_path / "bad" / "config.json")
    torch.save({"generator": {"dict.weight": torch.zeros(3, 3)}}, tmp_path / "bad" / "g_1")
    with pytest.raises(VocoderError, match="does not match its config"):
        load_codehifigan(tmp_path / "bad")


def test_batch_and_streaming_equal_whole_utterance():
    voc = UnitVocoder.load(ASSETS / "dur")
    units = [torch.randint(0, 20, (n,)) for n in (90, 37)]
    single = [voc.frames([u])[0] for u in units]
    batch = voc.frames(units)
    assert [len(w) for w in batch] == [len(u) * voc.hop for u in units]
    torch.testing.assert_close(
        batch[0], single[0], atol=1e-5, rtol=1e-4
    )  # the longest row: no padding
    chunks = list(voc.stream(units[0].tolist(), chunk=10, context=24))
    assert len(chunks) == 9
    torch.testing.assert_close(torch.cat(chunks), single[0], atol=1e-5, rtol=1e-4)


def test_attach_checks_unit_count(train_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(train_bundle, bundle)
    with pytest.raises(BundleError, match="20 units/codes, vocab.json has 24"):
        attach_vocoder(bundle, ASSETS / "dur")
    assert (
        "vocoders" not in json.loads((bundle / "tokunify.json").read_text())
        or not json.loads((bundle / "tokunify.json").read_text())["vocoders"]
    )


def test_a_few_training_steps_reduce_mel_loss(train_store, tmp_path):
    from tokunify.train.vocoder import VocoderTrainConfig, run_train_vocoder

    cfg = VocoderTrainConfig(
        store=str(train_store),
        out=str(tmp_path / "voc"),
        steps=24,
        batch_size=4,
        segment_frames=16,
        log_every=6,
        save_every=12,
        lr=1e-3,
    )
    res = run_train_vocoder(cfg)
    mel = [r["loss/mel"] for r in res["history"]]
    assert (
        min(mel[2:]) < 0.9 * mel[0] and "loss/d" in res["history"][0]
    )  # GAN steps are noisy: best of the later windows
    voc = UnitVocoder.load(res["vocoder"])
    assert voc.num_units == 24 and voc.sample_rate == 16000
    # resume: a longer run continues from the last checkpoint
    cfg.steps = 30
    more = run_train_vocoder(cfg)
    assert more["history"][0]["step"] == 30 and more["steps"] == 30


def test_config_rejects_unsupported_variants():
    with pytest.raises(VocoderError, match="F0"):
        CodeHiFiGANConfig.from_dict({"num_embeddings": 10, "f0": True})
    assert (
        CodeHiFiGAN(
            CodeHiFiGANConfig(
                num_embeddings=5,
                upsample_initial_channel=8,
                upsample_rates=[2],
                upsample_kernel_sizes=[4],
            )
        ).cfg.hop
        == 2
    )
