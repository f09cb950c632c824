"""Waveforms -> response bytes: WAV (whole or streamed), raw 16-bit PCM, and MP3, OGG/Opus and
FLAC through soundfile's (libsndfile's) encoders."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import numpy as np
import soundfile as sf
import soxr

MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
"""The rates Opus codes; other rates are resampled to the next one up (48 kHz at most)."""
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""The rates of MPEG-1/2/2.5 layer III."""


def to_pcm16(wav: np.ndarray) -> bytes:
    """``[N]`` float in [-1, 1] -> little-endian int16 bytes (clipped)."""
    x = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    return (x * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int, n_samples: int | None = None) -> bytes:
    """A 44-byte mono 16-bit WAV header; ``n_samples=None`` for a stream of unknown length.

    Written by hand because soundfile and ``wave`` seek back to fill in the sizes, which a stream
    cannot do. A stream's sizes are 0xFFFFFFFF, which browsers, ffmpeg and libsndfile read as "until
    the end" (OpenAI's streamed WAV does the same). One writer for whole and streamed WAV keeps
    their samples identical to ``pcm``'s.
    """
    data = 0xFFFFFFFF if n_samples is None else 2 * n_samples
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return b"".join(
        [
            b"RIFF", struct.pack("<I", riff), b"WAVE",
            b"fmt ", struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16),
            b"data", struct.pack("<I", data),
        ]
    )  # fmt: skip


def to_wav(wav: np.ndarray, sample_rate: int) -> bytes:
    """A whole ``[N]`` waveform as a 16-bit mono WAV file."""
    return wav_header(sample_rate, int(np.asarray(wav).shape[-1])) + to_pcm16(wav)


def _pcm(wav: np.ndarray, sample_rate: int) -> bytes:
    return to_pcm16(wav)


def coded_rate(sample_rate: int, rates: tuple[int, ...]) -> int:
    """The codec's rate for ``sample_rate``: itself if the codec has it, else the next one up."""
    return next((r for r in rates if r >= sample_rate), rates[-1])


CODEC_RATES = {"mp3": MP3_RATES, "opus": OPUS_RATES}
STREAMED = ("wav", "pcm")
"""The formats a streamed synthesis can be sent in (their chunks need no encoder state)."""


def rate_of(fmt: str, sample_rate: int) -> int:
    """The sample rate of ``fmt``'s bytes for a ``sample_rate`` waveform."""
    rates = CODEC_RATES.get(fmt)
    return sample_rate if rates is None else coded_rate(sample_rate, rates)


def _soundfile(fmt: str, subtype: str, rates: tuple[int, ...] | None) -> Callable[[np.ndarray, int], bytes]:  # fmt: skip
    def encode(wav: np.ndarray, sample_rate: int) -> bytes:
        x = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
        rate = sample_rate if rates is None else coded_rate(sample_rate, rates)
        if rate != sample_rate and len(x):
            x = soxr.resample(x, sample_rate, rate).astype(np.float32)
        buf = io.BytesIO()
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
        return buf.getvalue()

    encode.__doc__ = f"A whole ``[N]`` waveform as {fmt}/{subtype} (libsndfile)."
    return encode


ENCODERS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "mp3": _soundfile("MP3", "MPEG_LAYER_III", MP3_RATES),
    "opus": _soundfile("OGG", "OPUS", OPUS_RATES),
    "flac": _soundfile("FLAC", "PCM_16", None),
    "wav": to_wav,
    "pcm": _pcm,
}
"""Whole-waveform encoders by response format: ``fn(wav [N], sample_rate) -> bytes``."""
