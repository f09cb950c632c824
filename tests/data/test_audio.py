"""Audio I/O: soundfile reads with segments, soxr resampling, mono mixing, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tokunify.data.audio import AudioError, load, prepare, read_audio, read_many, resample, to_mono

SR = 8000


@pytest.fixture
def stereo(tmp_path):
    t = np.arange(SR) / SR  # one second
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 220 * t)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([left, right], 1).astype(np.float32), SR, subtype="FLOAT")
    return p, np.stack([left, right]).astype(np.float32)


def test_read_segment_and_channels(stereo):
    p, ref = stereo
    wav, sr = read_audio(p, start=0.25, end=0.5)
    assert sr == SR and wav.shape == (2, SR // 4) and wav.dtype == np.float32
    np.testing.assert_allclose(wav, ref[:, SR // 4 : SR // 2], atol=1e-6)


def test_load_mixes_to_mono_and_resamples(stereo):
    p, ref = stereo
    wav = load(p, 16000)
    assert wav.shape == (16000,) and wav.dtype == np.float32
    back = resample(wav, 16000, SR)
    np.testing.assert_allclose(back[100:-100], ref.mean(0)[100:-100], atol=2e-3)
    left = ref[0]
    assert to_mono(ref[:1]).shape == (SR,) and resample(left, SR, SR) is left


def test_a_segment_end_rounded_past_the_file_is_cut_to_it(stereo):
    """Kaldi/NeMo segment times are rounded: the last segment may end a few samples late."""
    p, ref = stereo
    wav, _ = read_audio(p, start=0.5, end=1.0004)
    np.testing.assert_allclose(wav, ref[:, SR // 2 :], atol=1e-6)


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (0.5, 0.5, "is not after start"),
        (2.0, None, "outside the file"),
        (0.0, 3.0, "outside the file"),
        (0.5, 1.6, "outside the file"),  # more than MAX_OVERSHOOT_S past the end
    ],
)
def test_bad_segments(stereo, start, end, reason):
    with pytest.raises(AudioError, match=reason):
        read_audio(stereo[0], start, end)


def test_unreadable_missing_and_truncated_files(tmp_path, stereo):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(stereo[0].read_bytes()[:2000])
    out = read_many([(junk, None, None), (tmp_path / "none.wav", None, None), (cut, None, None), (stereo[0], None, None)])  # fmt: skip
    assert isinstance(out[0], AudioError) and "unreadable audio" in str(out[0])
    assert isinstance(out[1], AudioError) and "file not found" in str(out[1])
    assert isinstance(out[2], AudioError) and "truncated" in str(out[2])
    assert out[3][0].shape == (2, SR)
    with pytest.raises(ValueError, match="unknown audio reader"):
        read_many([], reader="magic")


def test_prepare_refuses_empty_short_and_nonfinite():
    with pytest.raises(AudioError, match="x: empty audio"):
        prepare(np.zeros(0, np.float32), SR, SR, "x")
    with pytest.raises(AudioError, match="shorter than one frame"):
        prepare(np.zeros(10, np.float32), SR, SR, "x", min_samples=400)
    with pytest.raises(AudioError, match="NaN or inf"):
        prepare(np.array([0.0, np.nan], np.float32), SR, SR, "x")
    with pytest.raises(AudioError, match=r"\[N\] or \[C, N\]"):
        to_mono(np.zeros((1, 1, 4)))
