"""Offline speech from espeak-ng, through ctypes on the library bundled in the ``espeakng-loader`` wheel.

No system install and no download: ``espeakng_loader`` ships ``libespeak-ng`` and its voice data.
Synthesis runs in synchronous mode (hundreds of times faster than real time on one core); word
events give each word's start time, the basis for word alignments, and phoneme events give a phone
alignment (the labels of an LDA feature transform for offline units).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

import numpy as np

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_INITIALIZE_PHONEME_EVENTS = 0x0001
_RATE, _PITCH = 1, 3
_WORD_RE = re.compile(r"[A-Za-z0-9']+")
_STRESS_RE = re.compile(r"[',]")


class EspeakError(RuntimeError):
    pass


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class Synthesis:
    audio: np.ndarray  # [N] float32 in [-1, 1]
    sample_rate: int
    words: list[tuple[str, float, float]]  # (word, start_s, end_s)
    phones: list[
        tuple[str, float, float]
    ]  # (espeak phoneme mnemonic, start_s, end_s), no stress marks


class Espeak:
    """One espeak-ng engine (the C library keeps global state: use one per process)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise EspeakError("espeak synthesis needs the espeakng-loader package") from e
        self.lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        sr = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_PHONEME_EVENTS
        )
        if sr <= 0:
            raise EspeakError(f"espeak_Initialize failed ({sr}) with data at {data.decode()}")
        self.sample_rate = int(sr)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []  # (text_position, length, audio_ms)
        self._phones: list[tuple[str, int]] = []  # (mnemonic, audio_ms)
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: the C side holds the pointer
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip

    def _on_audio(self, wav, n, events) -> int:  # type: ignore[no-untyped-def]
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._events.append((e.text_position, e.length, e.audio_position))
            elif e.type == _EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0")[0].decode("ascii", "replace")
                self._phones.append((name, e.audio_position))
            i += 1
        return 0

    def synthesize(
        self, text: str, voice: str = "en-us", rate: int | None = None, pitch: int | None = None
    ) -> Synthesis:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+m3``); returns audio and word times."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"unknown espeak voice {voice!r}")
        if rate is not None:
            self.lib.espeak_SetParameter(_RATE, int(rate), 0)
        if pitch is not None:
            self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self._chunks, self._events, self._phones = [], [], []
        raw = text.encode("utf-8")
        err = self.lib.espeak_Synth(
            raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        if err != 0:
            raise EspeakError(f"espeak_Synth failed ({err}) on {text!r}")
        self.lib.espeak_Synchronize()
        audio = (np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)).astype(
            np.float32
        ) / 32768.0
        duration = len(audio) / self.sample_rate
        return Synthesis(
            audio, self.sample_rate, self._words(text, duration), self._phone_spans(duration)
        )

    def _phone_spans(self, duration: float) -> list[tuple[str, float, float]]:
        """Phoneme events -> (phone, start, end); stress marks (``'`` and ``,``) are dropped, so
        the labels are base phonemes. A phone ends where the next starts (or at the audio end)."""
        starts = [(_STRESS_RE.sub("", name) or name, ms / 1000.0) for name, ms in self._phones]
        ends = [s for _, s in starts[1:]] + [duration]
        return [(p, s, max(e, s)) for (p, s), e in zip(starts, ends, strict=True)]

    def _words(self, text: str, duration: float) -> list[tuple[str, float, float]]:
        """Word events -> (word, start, end); a word ends where the next starts (or at the audio end).

        espeak's text positions drift after sentence punctuation, so each event is matched to the
        nearest not-yet-used word of the text, in order.
        """
        spans = [(m.group(), m.start()) for m in _WORD_RE.finditer(text)]
        out: list[tuple[str, float]] = []
        j = 0
        for pos, _, ms in self._events:
            if j >= len(spans):
                break
            k = min(range(j, min(j + 3, len(spans))), key=lambda i: abs(spans[i][1] - (pos - 1)))
            out.append((spans[k][0], ms / 1000.0))
            j = k + 1
        ends = [s for _, s in out[1:]] + [duration]
        return [(w, s, max(e, s)) for (w, s), e in zip(out, ends, strict=True)]
