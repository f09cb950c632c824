"""A no-training baseline vocoder: the mean log-mel of each unit (fitted on training audio), then
Griffin-Lim (32 iterations). Trained vocoders are compared against it in the demo report."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class MeanMelVocoder:
    def __init__(
        self,
        means: torch.Tensor,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop: int = 320,
        iters: int = 32,
    ):
        from transformers.audio_utils import mel_filter_bank

        self.means = means  # [K, M] log-mel
        self.sample_rate, self.n_fft, self.hop, self.iters = sample_rate, n_fft, hop, iters
        fb = torch.as_tensor(mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=means.shape[1], min_frequency=20.0,
                                             max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney"), dtype=torch.float32)  # fmt: skip
        self.fb = fb  # [F, M]
        self.pinv = torch.linalg.pinv(fb)  # [M, F]
        self.window = torch.hann_window(n_fft)

    def _logmel(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            wav, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
        )  # [F, T]
        return torch.log(
            spec.abs().T @ self.fb + 1e-6
        )  # [T, M], frames as the mel/MFCC units see them

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
            mel = voc._logmel(torch.from_numpy(np.asarray(wav, np.float32)))
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
        g = torch.Generator().manual_seed(0)
        for u, d in zip(units, durations, strict=True):
            frames = torch.from_numpy(np.repeat(u, d).astype(np.int64))
            mag = (torch.exp(self.means[frames]) @ self.pinv).clamp(min=0).T  # [F, T]
            phase = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=g))
            n = (mag.shape[1] - 1) * self.hop + self.n_fft  # the span the unit frames were cut from
            for _ in range(self.iters):  # centred frames: the overlap-add envelope is never zero
                wav = torch.istft(
                    mag * phase, self.n_fft, self.hop, window=self.window, center=True, length=n
                )
                spec = torch.stft(
                    wav, self.n_fft, self.hop, window=self.window, center=True, return_complex=True
                )[:, : mag.shape[1]]
                phase = torch.exp(1j * torch.angle(spec))
            wav = torch.istft(
                mag * phase, self.n_fft, self.hop, window=self.window, center=True, length=n
            )
            out.append((wav / wav.abs().max().clamp(min=1e-6) * 0.5).numpy().astype(np.float32))
        return out
