"""The unit HiFi-GAN recipe: CodeHiFiGAN generator, multi-period and multi-scale discriminators
(LSGAN), mel L1 (x45) and feature-matching (x2) losses, and the duration predictor's MSE on
log(1 + frames) of the deduplicated units.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from tokunify.data.melspec import LogMel, MelSpec
from tokunify.train.vocoder.config import VocoderTrainConfig
from tokunify.vocoder.codehifigan import CodeHiFiGAN, CodeHiFiGANConfig

PRESETS: dict[str, dict[str, Any]] = {
    # A CPU preset for the demo: small generator, slim discriminators, learns in minutes.
    "tiny-cpu": dict(
        embedding_dim=64,
        upsample_initial_channel=96,
        upsample_rates=[5, 4, 4, 4],
        upsample_kernel_sizes=[11, 8, 8, 8],
        resblock="2",
        resblock_kernel_sizes=[3, 5],
        resblock_dilation_sizes=[[1, 3], [1, 3]],
        disc_scale=8,
    ),
    # The published unit HiFi-GAN (speech-resynthesis hubert100_dw1.0 at 50 Hz units, 16 kHz).
    "v1": dict(
        embedding_dim=128,
        upsample_initial_channel=512,
        upsample_rates=[5, 4, 4, 2, 2],
        upsample_kernel_sizes=[11, 8, 8, 4, 4],
        resblock="1",
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3,
        disc_scale=1,
    ),
}


# ---- discriminators (HiFi-GAN), with a channel divisor for the CPU preset ---------------------
def _conv_stack(
    convs: nn.ModuleList, post: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack of a HiFi-GAN discriminator: (flattened score, feature maps)."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        fmap.append(x)
    x = post(x)
    fmap.append(x)
    return x.flatten(1), fmap


class DiscriminatorP(nn.Module):
    def __init__(self, period: int, scale: int = 1):
        super().__init__()
        self.period = period
        ch = [1, 32 // scale, 128 // scale, 512 // scale, 1024 // scale, 1024 // scale]
        self.convs = nn.ModuleList(
            [
                parametrizations.weight_norm(
                    nn.Conv2d(ch[i], ch[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0))
                )
                for i in range(5)
            ]
        )
        self.conv_post = parametrizations.weight_norm(
            nn.Conv2d(ch[-1], 1, (3, 1), 1, padding=(1, 0))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), "reflect")
        x = x.view(b, c, -1, self.period)
        return _conv_stack(self.convs, self.conv_post, x)


class DiscriminatorS(nn.Module):
    def __init__(self, scale: int = 1):
        super().__init__()
        c = [
            1,
            128 // scale,
            128 // scale,
            256 // scale,
            512 // scale,
            1024 // scale,
            1024 // scale,
            1024 // scale,
        ]
        specs = [
            (15, 1, 1, 7),
            (41, 2, 4, 20),
            (41, 2, 16, 20),
            (41, 4, 16, 20),
            (41, 4, 16, 20),
            (41, 1, 16, 20),
            (5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            [
                parametrizations.weight_norm(
                    nn.Conv1d(
                        c[i],
                        c[i + 1],
                        k,
                        s,
                        groups=min(g, max(1, c[i] // 4)) if i else 1,
                        padding=p,
                    )
                )
                for i, (k, s, g, p) in enumerate(specs)
            ]
        )
        self.conv_post = parametrizations.weight_norm(nn.Conv1d(c[-1], 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.conv_post, x)


class Discriminators(nn.Module):
    """Multi-period (2, 3, 5, 7, 11) and multi-scale (x1, x2, x4 average-pooled) discriminators."""

    def __init__(self, scale: int = 1):
        super().__init__()
        self.mpd = nn.ModuleList([DiscriminatorP(p, scale) for p in (2, 3, 5, 7, 11)])
        self.msd = nn.ModuleList([DiscriminatorS(scale) for _ in range(3)])
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        out = [d(x) for d in self.mpd]
        for i, d in enumerate(self.msd):
            if i:
                x = self.pool(x)
            out.append(d(x))
        return out


# ---- losses ---------------------------------------------------------------------------------
def loss_mel(sample_rate: int) -> LogMel:
    """Differentiable log-mel (80 bins, 1024-point STFT, hop 256), the HiFi-GAN loss features."""
    spec = MelSpec(sample_rate=sample_rate, n_fft=1024, hop_length=256, n_mels=80, fmin=0.0,
                   magnitude_eps=1e-9, log_floor=1e-5, floor="clamp", reflect_pad=True)  # fmt: skip
    return LogMel(spec)


def feature_loss(real: list, fake: list) -> torch.Tensor:
    return 2 * sum(
        torch.mean(torch.abs(r.detach() - f))
        for (_, rm), (_, fm) in zip(real, fake, strict=True)
        for r, f in zip(rm, fm, strict=True)
    )


def disc_loss(real: list, fake: list) -> torch.Tensor:
    return sum(
        torch.mean((1 - r) ** 2) + torch.mean(f**2)
        for (r, _), (f, _) in zip(real, fake, strict=True)
    )


def gen_adv_loss(fake: list) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f, _ in fake)


def duration_loss(gen: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """MSE of the predicted log(1 + frames) of each deduplicated unit."""
    units, durs = b["units"], b["durations"]
    mask = durs > 0
    log_pred = gen.dur_predictor(gen.dict(units))
    return F.mse_loss(log_pred[mask], torch.log1p(durs[mask].float()))


class HiFiGANArch:
    """``arch: codehifigan``: one generator step (and one discriminator step when adversarial)."""

    def __init__(self, cfg: VocoderTrainConfig, num_units: int, sample_rate: int, frame_rate: float,
                 num_speakers: int):  # fmt: skip
        p = dict(PRESETS[cfg.preset])
        scale = p.pop("disc_scale")
        emb = p["embedding_dim"]
        gcfg = CodeHiFiGANConfig(
            num_embeddings=num_units, sampling_rate=sample_rate, multispkr=cfg.multispkr, num_speakers=max(num_speakers, 1),
            dur_predictor_params={"encoder_embed_dim": emb, "var_pred_hidden_dim": emb, "var_pred_kernel_size": 3, "var_pred_dropout": 0.5},
            **p,
        )  # fmt: skip
        self.cfg = cfg
        self.gen: nn.Module = CodeHiFiGAN(gcfg)
        self.disc = Discriminators(scale)
        self.mel = loss_mel(sample_rate)
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), cfg.lr, betas=(0.8, 0.99))
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), cfg.lr, betas=(0.8, 0.99))
        self.tail = 0

    @staticmethod
    def hop(cfg: VocoderTrainConfig, sample_rate: int, frame_rate: float) -> int:
        out = 1
        for r in PRESETS[cfg.preset]["upsample_rates"]:
            out *= r
        return out

    def prepare(self, acc: Any) -> None:
        self.gen, self.disc, self.mel, self.opt_g, self.opt_d = acc.prepare(
            self.gen, self.disc, self.mel, self.opt_g, self.opt_d
        )

    def step(self, acc: Any, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg, g = self.cfg, acc.unwrap_model(self.gen)
        real = b["wav"]
        fake = self.gen(b["code"], spkr=b["spkr"] if cfg.multispkr else None)[:, 0]  # [B, N]
        out: dict[str, torch.Tensor] = {}
        if cfg.adversarial:
            d_loss = disc_loss(self.disc(real[:, None]), self.disc(fake.detach()[:, None]))
            self.opt_d.zero_grad()
            acc.backward(d_loss)
            self.opt_d.step()
        mel_loss = F.l1_loss(self.mel(fake), self.mel(real))
        dur_loss = duration_loss(g, b)
        g_loss = cfg.mel_weight * mel_loss + dur_loss
        if cfg.adversarial:
            real_out, fake_out = self.disc(real[:, None]), self.disc(fake[:, None])
            g_loss = g_loss + gen_adv_loss(fake_out) + feature_loss(real_out, fake_out)
        self.opt_g.zero_grad()
        acc.backward(g_loss)
        self.opt_g.step()
        out.update({"mel": mel_loss, "dur": dur_loss, "g": g_loss})
        if cfg.adversarial:
            out["d"] = d_loss
        return out
