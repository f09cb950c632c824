"""The one log-mel front end: unit features, the unit2mel vocoder and the HiFi-GAN mel loss.

Callers differ only in settings (:class:`MelSpec`), never in code: the k-means features take the
log of the mel *power* plus 1e-6 with 400-sample windows; the unit2mel vocoder the log of the mel
*magnitude* plus 1e-5; the HiFi-GAN recipe's loss a reflect-padded, clamped log magnitude. The
filter bank is transformers' ``mel_filter_bank`` (Slaney scale and norm) and the STFT is
``torch.stft``; only the glue is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MelSpec:
    """Log-mel settings. Frames are cut without centring: frame ``t`` covers samples
    ``[t * hop, t * hop + n_fft)`` of the (optionally padded) signal."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    win_length: int | None = None  # None: n_fft (a shorter Hann window is centred in n_fft)
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    power: Literal[1, 2] = 1  # 1: magnitude, 2: power
    magnitude_eps: float = 0.0  # > 0: sqrt(re^2 + im^2 + eps), a gradient that stays finite at 0
    log_floor: float = 1e-5
    floor: Literal["add", "clamp"] = "add"  # log(mel + floor) or log(max(mel, floor))
    reflect_pad: bool = False  # pad (n_fft - hop) / 2 on each side by reflection (HiFi-GAN)


def mel_filters(spec: MelSpec) -> torch.Tensor:
    """``[n_fft // 2 + 1, n_mels]`` Slaney filter bank."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=spec.n_fft // 2 + 1,
        num_mel_filters=spec.n_mels,
        min_frequency=spec.fmin,
        max_frequency=spec.fmax or spec.sample_rate / 2,
        sampling_rate=spec.sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.as_tensor(fb, dtype=torch.float32)


class LogMel(nn.Module):
    """``[B, N]`` audio -> ``[B, T, M]`` log-mel, differentiable, on the module's device."""

    def __init__(self, spec: MelSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("fb", mel_filters(spec), persistent=False)  # [F, M]
        win = spec.win_length or spec.n_fft
        self.register_buffer("window", torch.hann_window(win), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        s = self.spec
        x = wav.float()
        if s.reflect_pad:
            pad = (s.n_fft - s.hop_length) // 2
            x = F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        if x.shape[-1] < s.n_fft:
            x = F.pad(x, (0, s.n_fft - x.shape[-1]))
        z = torch.stft(
            x,
            s.n_fft,
            s.hop_length,
            s.win_length or s.n_fft,
            self.window,
            center=False,
            return_complex=True,
        )  # [B, F, T]
        if s.power == 2:
            mag = z.real**2 + z.imag**2
        elif s.magnitude_eps > 0:
            mag = torch.sqrt(z.real**2 + z.imag**2 + s.magnitude_eps)
        else:
            mag = z.abs()
        mel = mag.transpose(1, 2) @ self.fb  # [B, T, M]
        if s.floor == "clamp":
            return torch.log(torch.clamp(mel, min=s.log_floor))
        return torch.log(mel + s.log_floor)
