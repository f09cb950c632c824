"""A no-training baseline vocoder: the mean log-mel of each unit (fitted on training audio), then
Griffin-Lim (32 iterations, momentum 0.99 as librosa's default). It shares the spectrogram and the
phase reconstruction of :mod:`tokunify.vocoder.unitmel`, so the two differ only in how the log-mel
is made: a per-unit average here, a trained conv net there. The demo report compares them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tokunify.vocoder.unitmel import LogMelSpec, UnitMelConfig


class MeanMelVocoder:
    def __init__(self, means: torch.Tensor, sample_rate: int = 16000, iters: int = 32):
        self.means = means  # [K, M] log-mel
        self.cfg = UnitMelConfig(
            num_embeddings=means.shape[0], n_mels=means.shape[1], sampling_rate=sample_rate,
            griffin_lim_iters=iters,
        )  # fmt: skip
        self.spec = LogMelSpec(self.cfg)

    @classmethod
    def fit(
        cls,
        items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        k: int,
        n_mels: int = 80,
        sample_rate: int = 16000,
    ) -> MeanMelVocoder:
        """``items``: (units, durations, 16 kHz audio) per utterance."""
        voc = cls(torch.zeros(k, n_mels), sample_rate)
        sums, counts = torch.zeros(k, n_mels), torch.zeros(k)
        for units, durs, wav in items:
            mel = voc.spec(torch.from_numpy(np.asarray(wav, np.float32))[None])[0]  # [T, M]
            frames = torch.from_numpy(np.repeat(units, durs).astype(np.int64))
            n = min(len(frames), mel.shape[0])
            sums.index_add_(0, frames[:n], mel[:n])
            counts.index_add_(0, frames[:n], torch.ones(n))
        voc.means = torch.where(
            counts[:, None] > 0,
            sums / counts.clamp(min=1)[:, None],
            sums.sum(0) / counts.sum().clamp(min=1),
        )
        return voc

    def __call__(
        self, units: Sequence[np.ndarray], durations: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        out = []
        for u, d in zip(units, durations, strict=True):
            frames = torch.from_numpy(np.repeat(u, d).astype(np.int64))
            wav = self.spec.to_audio(self.means[frames][None])[0]  # [T * hop]
            out.append(wav.numpy().astype(np.float32))
        return out
