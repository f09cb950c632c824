from __future__ import annotations

import math

import torch

from tokunify.data.melspec import LogMel, MelSpec, mel_filters

SR, N = 16000, 8000


def test_shapes_peak_and_gradient():
    t = torch.arange(N) / SR
    wav = torch.sin(2 * math.pi * 1000 * t)[None]  # [1, N], a 1 kHz tone
    plain = MelSpec(sample_rate=SR, n_fft=512, hop_length=320, n_mels=40)
    out = LogMel(plain)(wav)
    assert out.shape == (1, (N - 512) // 320 + 1, 40)
    fb = mel_filters(plain)  # [F, M]
    tone_bin = round(1000 * 512 / SR)
    assert int(out[0].mean(0).argmax()) == int(fb[tone_bin].argmax())
    padded = MelSpec(sample_rate=SR, n_fft=1024, hop_length=256, n_mels=80, magnitude_eps=1e-9,
                     floor="clamp", reflect_pad=True)  # fmt: skip
    assert LogMel(padded)(wav).shape == (1, N // 256, 80)
    silent = torch.zeros(1, N, requires_grad=True)
    LogMel(padded)(silent).sum().backward()
    assert torch.isfinite(silent.grad).all()
    # the unit features' settings: power spectrum, 400-sample window centred in 512, log(x + 1e-6)
    spec = MelSpec(sample_rate=SR, n_fft=512, hop_length=320, n_mels=40, win_length=400, power=2,
                   log_floor=1e-6)  # fmt: skip
    frames = wav[0].unfold(0, 512, 320)  # [T, 512]
    window = torch.nn.functional.pad(torch.hann_window(400), (56, 56))
    ref = torch.log((torch.fft.rfft(frames * window).abs() ** 2) @ mel_filters(spec) + 1e-6)
    torch.testing.assert_close(LogMel(spec)(wav)[0], ref, atol=1e-3, rtol=1e-4)
