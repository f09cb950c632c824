"""Audio I/O and conversion: soundfile to read, soxr to resample, clear errors naming the input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

try:  # soundfile raises its own error type for unreadable files
    from soundfile import LibsndfileError as _SFError
except ImportError:  # older soundfile
    _SFError = RuntimeError


# libsndfile's header log for a WAV whose data chunk runs past the end of the file
_TRUNCATED = re.compile(r"^data\s*:\s*\d+\s*\(should be", re.MULTILINE)


# How far a segment's end may lie past the end of its file and be cut to it: segment times are
# written rounded (Kaldi's `segments` to 10 ms or 1 ms), so the last segment of a recording often
# ends a few samples late. Kaldi's extract-segments allows the same (--max-overshoot 0.5).
MAX_OVERSHOOT_S = 0.5


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, too short, or with NaN/inf samples."""


def _header(p: Path, start: float | None, end: float | None) -> tuple[int, int, int]:
    """Check a file's header and segment; returns (sample rate, first sample, stop or -1)."""
    import soundfile as sf

    if not p.exists():
        raise AudioError(f"{p}: file not found")
    info = sf.info(str(p))
    sr = int(info.samplerate)
    a = round(start * sr) if start else 0
    b = round(end * sr) if end is not None else -1
    if end is not None and b <= a:
        raise AudioError(f"{p}: end {end} s is not after start {start or 0} s")
    if a > info.frames or (end is not None and b > info.frames + round(MAX_OVERSHOOT_S * sr)):
        raise AudioError(
            f"{p}: segment [{start or 0}, {end}] s lies outside the file ({info.frames / sr:.3f} s)"
        )
    if b > info.frames:
        b = info.frames  # a segment end rounded past the last sample: read to the end
    if _TRUNCATED.search(info.extra_info or ""):
        raise AudioError(f"{p}: truncated file (the header promises more data than the file holds)")
    return sr, a, b


def read_audio(
    path: str | Path, start: float | None = None, end: float | None = None
) -> tuple[np.ndarray, int]:
    """Read ``[channels, samples]`` float32 and the sample rate; ``start``/``end`` in seconds."""
    import soundfile as sf

    p = Path(path)
    try:
        _, a, b = _header(p, start, end)
        data, sr = sf.read(
            str(p), start=a, stop=None if b < 0 else b, dtype="float32", always_2d=True
        )
    except AudioError:
        raise
    except (_SFError, RuntimeError, OSError, ValueError, TypeError) as e:
        raise AudioError(f"{p}: unreadable audio ({e})") from e
    return np.ascontiguousarray(data.T), int(sr)  # [C, N]


Segment = tuple[Path, float | None, float | None]


def read_many(
    items: list[Segment], reader: str = "soundfile", workers: int = 4
) -> list[tuple[np.ndarray, int] | AudioError]:
    """Read many files: ``[C, N]`` float32 and rate, or the :class:`AudioError` of that item.

    ``reader="fairseq2"`` decodes with fairseq2's native data pipeline, ``workers`` files at a time
    outside the GIL (``pip install tokunify[fairseq2]``). Headers (missing, truncated, segment
    bounds) are checked with soundfile either way, so both readers reject the same files.
    """
    if reader == "soundfile":
        out: list[tuple[np.ndarray, int] | AudioError] = []
        for p, start, end in items:
            try:
                out.append(read_audio(p, start, end))
            except AudioError as e:
                out.append(e)
        return out
    if reader != "fairseq2":
        raise ValueError(f"unknown audio reader {reader!r} (soundfile or fairseq2)")
    from fairseq2.data.audio import AudioDecoder, MemoryBlock
    from fairseq2.data.data_pipeline import read_sequence

    decoder = AudioDecoder()

    def decode(i: int) -> tuple[np.ndarray, int] | AudioError:
        p, start, end = items[i]
        try:
            _, a, b = _header(Path(p), start, end)
            with open(p, "rb") as f:
                out = decoder(MemoryBlock(f.read()))
            wav = out["waveform"].numpy()  # [N, C] or [N]
            wav = wav[:, None] if wav.ndim == 1 else wav
            return np.ascontiguousarray(wav[a : None if b < 0 else b].T.astype(np.float32)), int(
                out["sample_rate"]
            )
        except AudioError as e:
            return e
        except Exception as e:
            return AudioError(f"{p}: unreadable audio ({e})")

    return list(
        read_sequence(list(range(len(items)))).map(decode, num_parallel_calls=workers).and_return()
    )


def to_mono(wav: np.ndarray) -> np.ndarray:
    """``[N]`` or ``[C, N]`` -> ``[N]`` (mean over channels)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav
    if wav.ndim == 2:
        return wav.mean(axis=0) if wav.shape[0] > 1 else wav[0]
    raise AudioError(f"audio must be [N] or [C, N], got shape {wav.shape}")


def resample(wav: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Resample ``[N]`` with soxr (high quality). Identity when the rates match."""
    if sr == target_sr:
        return wav
    import soxr

    return soxr.resample(wav, sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def check_audio(wav: np.ndarray, name: str, min_samples: int = 1) -> np.ndarray:
    """Raise :class:`AudioError` naming ``name`` for empty, too short or non-finite audio."""
    if wav.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if wav.shape[-1] < min_samples:
        raise AudioError(
            f"{name}: {wav.shape[-1]} samples is shorter than one frame ({min_samples} samples)"
        )
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio contains NaN or inf samples")
    return wav


def prepare(
    wav: np.ndarray, sr: int, target_sr: int, name: str = "audio", min_samples: int = 1
) -> np.ndarray:
    """Any channel count and rate -> mono float32 ``[N]`` at ``target_sr``, checked."""
    mono = to_mono(wav)
    check_audio(mono, name, 1)
    out = resample(mono, sr, target_sr)
    return check_audio(out, name, min_samples)


def load(
    path: str | Path,
    target_sr: int,
    start: float | None = None,
    end: float | None = None,
    min_samples: int = 1,
) -> np.ndarray:
    """Read, mix to mono, resample and check in one call: ``[N]`` float32 at ``target_sr``."""
    wav, sr = read_audio(path, start, end)
    return prepare(wav, sr, target_sr, str(path), min_samples)
