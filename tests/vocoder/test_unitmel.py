"""The CPU vocoder: units -> log-mel conv net -> fast Griffin-Lim."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tokunify.data.audio import load as load_audio
from tokunify.data.manifest import read_manifest
from tokunify.generate.generator import Generator
from tokunify.model.bundle import attach_vocoder
from tokunify.vocoder import UnitMel, UnitMelConfig, UnitVocoder
from tokunify.vocoder.unitmel import LogMelSpec


def test_griffin_lim_reconstructs_a_spectrogram(speech_manifest):
    """Phase reconstruction from a real utterance's log-mel: the re-analysed log-mel is much
    closer to the target than the random starting phase gives, and frames land where they were."""
    wav = torch.from_numpy(load_audio(next(read_manifest(speech_manifest)).audio, 16000))
    errs = {}
    for iters in (0, 32):
        cfg = UnitMelConfig(num_embeddings=4, griffin_lim_iters=iters)
        spec = LogMelSpec(cfg)
        target = spec(wav[None])  # [1, T, M]
        t = target.shape[1]
        out = spec.to_audio(target)
        assert out.shape == (1, t * cfg.hop)
        # the vocoder drops the last window overhang; pad it back to re-analyse the same frames
        again = spec(torch.nn.functional.pad(out, (0, cfg.n_fft - cfg.hop)))
        errs[iters] = float((again - target)[:, 2:-2].abs().mean())
    assert errs[32] < 0.6 * errs[0], errs


def test_train_unit2mel_then_attach_and_decode(train_store, train_bundle, tmp_path):
    from tokunify.train.vocoder import VocoderTrainConfig, run_train_vocoder

    cfg = VocoderTrainConfig(store=str(train_store), out=str(tmp_path / "voc"), arch="unit2mel", steps=40,
                             batch_size=8, segment_frames=32, log_every=10, save_every=20, lr=2e-3)  # fmt: skip
    res = run_train_vocoder(cfg)
    mel = [r["loss/mel"] for r in res["history"]]
    assert mel[-1] < 0.7 * mel[0], mel
    assert "loss/d" not in res["history"][0]
    voc = UnitVocoder.load(res["vocoder"])
    assert isinstance(voc.model, UnitMel) and voc.num_units == 24 and voc.hop == 320
    units, durs = torch.tensor([3, 7, 1, 9]), torch.tensor([4, 2, 5, 3])
    wav = voc([units], [durs])[0]
    assert (
        wav.shape == (14 * 320,) and bool(torch.isfinite(wav).all()) and float(wav.abs().max()) > 0
    )
    assert len(voc([units])[0]) % 320 == 0  # predicted durations
    # resume continues from the last checkpoint
    cfg.steps = 50
    assert run_train_vocoder(cfg)["history"][0]["step"] == 50
    # a bundle records the kind and serves it through the generator
    bundle = tmp_path / "b"
    shutil.copytree(train_bundle, bundle)
    entry = attach_vocoder(bundle, res["vocoder"])
    assert entry["kind"] == "unit2mel"
    assert (
        json.loads((bundle / "tokunify.json").read_text())["vocoders"]["units"]["kind"]
        == "unit2mel"
    )
    out = Generator(bundle).decode([np.array([3, 7, 1])], [np.array([2, 2, 2])])
    assert out[0].shape == (6 * 320,)


def test_single_speaker_and_dilated_unit2mel(train_store, tmp_path):
    from tokunify.train.vocoder import VocoderTrainConfig, run_train_vocoder

    voice = "en-us"  # one of the speech_manifest voices
    cfg = VocoderTrainConfig(store=str(train_store), out=str(tmp_path / "voc"), arch="unit2mel", steps=4, batch_size=2,
                             segment_frames=16, log_every=2, save_every=100, speaker=voice, dilations=[1, 2, 4])  # fmt: skip
    voc = UnitVocoder.load(run_train_vocoder(cfg)["vocoder"])
    assert [c.dilation[0] for c in voc.model.convs] == [1, 2, 4]
    cfg.speaker, cfg.out = "nobody", str(tmp_path / "voc2")
    with pytest.raises(ValueError, match="speaker 'nobody'"):
        run_train_vocoder(cfg)
