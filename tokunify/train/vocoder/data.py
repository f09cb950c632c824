"""Aligned (units, audio) segments of a token store, for vocoder training."""

from __future__ import annotations

import numpy as np
import torch

from tokunify.data.audio import load as load_audio
from tokunify.data.store import StreamInfo, TokenStore


def stream_sample_rate(store: TokenStore, stream: str) -> int:
    """The sample rate the stream's tokenizer read its audio at (recorded in the store)."""
    info: StreamInfo | None = store.meta.streams.get(stream)
    if info is None:
        raise ValueError(f"{store.root}: no stream {stream!r}")
    sr = info.tokenizer.get("sample_rate") or info.tokenizer.get("features", {}).get("sample_rate")
    if not sr:
        raise ValueError(
            f"{store.root}: stream {stream!r} records no sample_rate in its tokenizer config"
        )
    return int(sr)


class SegmentData:
    """Utterances of a store with frame-rate units and audio; random aligned segments."""

    def __init__(
        self,
        store: TokenStore,
        stream: str,
        sample_rate: int,
        hop: int,
        seed: int,
        limit: int = 0,
        speaker: str | None = None,
    ):
        info = store.meta.streams.get(stream)
        if info is None or info.kind != "units":
            raise ValueError(f"{store.root}: no units stream {stream!r}")
        if abs(info.frame_rate * hop - sample_rate) > 1e-6:
            raise ValueError(
                f"vocoder hop {hop} at {sample_rate} Hz does not match the {info.frame_rate} Hz units of {store.root}"
            )
        self.hop, self.rng = hop, np.random.default_rng(seed)
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        speakers: dict[str, int] = {}
        for i in range(len(store)):
            if limit and len(self.items) >= limit:
                break
            r = store[i]
            if r.audio is None or stream not in r.streams:
                continue
            if speaker is not None and r.speaker != speaker:
                continue
            units = r.streams[stream].astype(np.int64)
            dur = r.durations.get(stream, np.ones_like(units)).astype(np.int64)
            wav = load_audio(r.audio, sample_rate, r.start, r.end)
            spk = speakers.setdefault(r.speaker or "", len(speakers))
            self.items.append((units, dur, wav, spk))
        if not self.items:
            who = f" of speaker {speaker!r}" if speaker is not None else ""
            raise ValueError(
                f"{store.root}: no usable records{who} with audio for stream {stream!r}"
            )
        self.speakers = speakers

    def batch(self, n: int, frames: int, tail: int = 0) -> dict[str, torch.Tensor]:
        """``n`` random segments of ``frames`` unit frames and their ``frames * hop + tail`` samples
        (``tail``: the window overhang of un-centred STFT frames), zero-padded past the end."""
        codes, wavs, spks, dedup, durs, valid = [], [], [], [], [], []
        for _ in range(n):
            units, dur, wav, spk = self.items[int(self.rng.integers(len(self.items)))]
            fr = np.repeat(units, dur)
            a = int(self.rng.integers(0, max(1, len(fr) - frames + 1)))
            seg = np.zeros(frames, np.int64)
            seg[: len(fr[a : a + frames])] = fr[a : a + frames]
            w = np.zeros(frames * self.hop + tail, np.float32)
            piece = wav[a * self.hop : (a + frames) * self.hop + tail]
            w[: len(piece)] = piece
            valid.append(min(frames, len(fr) - a))
            codes.append(seg)
            wavs.append(w)
            spks.append(spk)
            dedup.append(units)
            durs.append(dur)
        t = max(len(u) for u in dedup)
        du = np.zeros((n, t), np.int64)
        dd = np.zeros((n, t), np.int64)
        for i, (u, d) in enumerate(zip(dedup, durs, strict=True)):
            du[i, : len(u)], dd[i, : len(d)] = u, d
        return {"code": torch.from_numpy(np.stack(codes)), "wav": torch.from_numpy(np.stack(wavs)), "spkr": torch.tensor(spks),
                "units": torch.from_numpy(du), "durations": torch.from_numpy(dd), "valid": torch.tensor(valid)}  # fmt: skip
