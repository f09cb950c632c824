"""Unit HiFi-GAN (CodeHiFiGAN): discrete units -> waveform, in the layout speech-resynthesis and
fairseq publish, so their checkpoints load here and give the same waveform (tested on golden
outputs of their generator).

Checkpoint format: ``config.json`` plus a generator file (``torch.save({"generator": state_dict})``,
read with ``weights_only=True``) or our ``generator.safetensors``. Parameter names are theirs
(``dict``, ``spkr``, ``dur_predictor``, ``conv_pre``, ``ups``, ``resblocks``, ``conv_post``; weight
norm as ``weight_g``/``weight_v``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

LRELU_SLOPE = 0.1


class VocoderError(ValueError):
    pass


@dataclass
class CodeHiFiGANConfig:
    num_embeddings: int
    embedding_dim: int = 128
    model_in_dim: int | None = None  # embedding_dim (+ embedding_dim with a speaker embedding)
    resblock: str = "1"
    upsample_rates: list[int] = field(default_factory=lambda: [5, 4, 4, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [11, 8, 8, 4, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(
        default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    )
    multispkr: bool = False
    num_speakers: int = 200
    dur_predictor_params: dict[str, Any] | None = None
    sampling_rate: int = 16000
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # training settings etc. of the source config

    def __post_init__(self) -> None:
        if self.model_in_dim is None:
            self.model_in_dim = self.embedding_dim * (2 if self.multispkr else 1)

    @property
    def hop(self) -> int:
        return int(math.prod(self.upsample_rates))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodeHiFiGANConfig:
        known = set(cls.__dataclass_fields__) - {"extra"}
        kw = {k: d[k] for k in known if k in d}
        if "num_embeddings" not in kw:
            raise VocoderError("vocoder config needs num_embeddings")
        if d.get("f0") or d.get("lambda_commit") or d.get("embedder_params"):
            raise VocoderError(
                "F0-conditioned and speaker-embedder CodeHiFiGAN variants are not supported"
            )
        dur = d.get("dur_predictor_params") if d.get("dur_prediction_weight", 1.0) else None
        kw["dur_predictor_params"] = dur
        kw["multispkr"] = bool(d.get("multispkr", False))
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {
            **self.extra,
            **d,
            "dur_prediction_weight": 1.0 if self.dur_predictor_params else 0.0,
        }


def _wn(m: nn.Module) -> nn.Module:
    return parametrizations.weight_norm(m)


def _pad(k: int, d: int = 1) -> int:
    return (k * d - d) // 2


class ResBlock1(nn.Module):
    def __init__(self, ch: int, k: int, dilation: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            [_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=_pad(k, d))) for d in dilation]
        )
        self.convs2 = nn.ModuleList(
            [_wn(nn.Conv1d(ch, ch, k, 1, dilation=1, padding=_pad(k))) for _ in dilation]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    def __init__(self, ch: int, k: int, dilation: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(
            [_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=_pad(k, d))) for d in dilation]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class VariancePredictor(nn.Module):
    """Log-duration predictor of fairseq/speech-resynthesis (conv-ReLU-LN x 2, linear)."""

    def __init__(
        self,
        encoder_embed_dim: int,
        var_pred_hidden_dim: int,
        var_pred_kernel_size: int,
        var_pred_dropout: float,
    ):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv1d(
                encoder_embed_dim,
                var_pred_hidden_dim,
                var_pred_kernel_size,
                padding=(var_pred_kernel_size - 1) // 2,
            ),
            nn.ReLU(),
        )
        self.ln1 = nn.LayerNorm(var_pred_hidden_dim)
        self.conv2 = nn.Sequential(
            nn.Conv1d(var_pred_hidden_dim, var_pred_hidden_dim, var_pred_kernel_size, padding=1),
            nn.ReLU(),
        )
        self.ln2 = nn.LayerNorm(var_pred_hidden_dim)
        self.proj = nn.Linear(var_pred_hidden_dim, 1)
        self.dropout = var_pred_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, T]
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln1(x), p=self.dropout, training=self.training)
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln2(x), p=self.dropout, training=self.training)
        return self.proj(x).squeeze(2)


class CodeHiFiGAN(nn.Module):
    def __init__(self, cfg: CodeHiFiGANConfig):
        super().__init__()
        self.cfg = cfg
        self.dict = nn.Embedding(cfg.num_embeddings, cfg.embedding_dim)
        self.spkr = nn.Embedding(cfg.num_speakers, cfg.embedding_dim) if cfg.multispkr else None
        self.dur_predictor = (
            VariancePredictor(**cfg.dur_predictor_params) if cfg.dur_predictor_params else None
        )
        self.conv_pre = _wn(
            nn.Conv1d(cfg.model_in_dim, cfg.upsample_initial_channel, 7, 1, padding=3)
        )
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = cfg.upsample_initial_channel
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            self.ups.append(
                _wn(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            )
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(ch // 2 ** (i + 1), rk, rd))
        self.conv_post = _wn(nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), 1, 7, 1, padding=3))
        for m in self.modules():  # HiFi-GAN init
            if (
                isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))
                and m is not None
                and parametrize.is_parametrized(m)
            ):
                m.parametrizations.weight.original1.data.normal_(0.0, 0.01)

    def predict_durations(self, codes: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` deduplicated units -> ``[B, T]`` frames per unit (>= 1)."""
        if self.dur_predictor is None:
            raise VocoderError(
                "this vocoder has no duration predictor: pass durations, or deduplicated units cannot be expanded"
            )
        log_dur = self.dur_predictor(self.dict(codes))
        return torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """The HiFi-GAN generator on frame-rate features ``[B, C, T]`` -> ``[B, 1, T * hop]``."""
        x = self.conv_pre(x)
        n = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            xs = self.resblocks[i * n](x)
            for j in range(1, n):
                xs = xs + self.resblocks[i * n + j](x)
            x = xs / n
        return torch.tanh(self.conv_post(F.leaky_relu(x)))

    def forward(
        self,
        code: torch.Tensor,
        spkr: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``code [B, T]`` (frame-rate units, or deduplicated units with ``durations [B, T]``) -> ``[B, 1, N]``.

        With durations, rows are expanded and right-padded to the longest (crop with :meth:`lengths`).
        """
        x = self.dict(code)  # [B, T, C]
        if durations is not None:
            frames = [
                torch.repeat_interleave(x[b], durations[b].clamp(min=0), dim=0)
                for b in range(x.shape[0])
            ]
            x = nn.utils.rnn.pad_sequence(frames, batch_first=True)
        x = x.transpose(1, 2)  # [B, C, T]
        if self.spkr is not None:
            if spkr is None:
                raise VocoderError("multi-speaker vocoder: pass speaker ids")
            x = torch.cat(
                [x, self.spkr(spkr.view(-1))[:, :, None].expand(-1, -1, x.shape[-1])], dim=1
            )
        return self.generate(x)

    def fold_weight_norm(self) -> CodeHiFiGAN:
        """Replace weight-normed convolutions by plain ones (inference; identical output)."""
        for m in self.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self


# ---- checkpoints ---------------------------------------------------------------------------------
def _to_ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }


def _to_theirs(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in sd.items()
    }


def load_codehifigan(path: str | Path, config: str | Path | None = None) -> CodeHiFiGAN:
    """Load from a directory (``config.json`` + ``generator.safetensors`` or a ``g_*`` file) or a
    generator file with ``config`` next to it. Published files are read with ``weights_only=True``."""
    p = Path(path)
    if p.is_dir():
        cfg_path = Path(config) if config else p / "config.json"
        gens = [p / "generator.safetensors", *sorted(p.glob("g_*"))]
        gen = next((g for g in gens if g.is_file()), None)
        if gen is None:
            raise VocoderError(f"{p}: no generator.safetensors or g_* checkpoint")
    else:
        gen, cfg_path = p, Path(config) if config else p.parent / "config.json"
    if not cfg_path.is_file():
        raise VocoderError(f"{cfg_path}: vocoder config.json not found")
    cfg = CodeHiFiGANConfig.from_dict(json.loads(cfg_path.read_text()))
    if gen.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(gen))
    else:
        try:
            ckpt = torch.load(str(gen), map_location="cpu", weights_only=True)
        except Exception as e:
            raise VocoderError(f"{gen}: cannot read the generator checkpoint ({e})") from e
        sd = ckpt.get("generator", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(sd, dict):
            raise VocoderError(f"{gen}: no 'generator' state dict")
    model = CodeHiFiGAN(cfg)
    try:
        missing, unexpected = model.load_state_dict(_to_ours(sd), strict=False)
    except RuntimeError as e:  # shape mismatches
        raise VocoderError(
            f"{gen}: does not match its config ({str(e).splitlines()[-1].strip()})"
        ) from e
    if missing or unexpected:
        raise VocoderError(
            f"{gen}: does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


def save_codehifigan(model: CodeHiFiGAN, out: str | Path) -> Path:
    """``out/config.json`` + ``out/generator.safetensors`` (parameter names as published)."""
    from safetensors.torch import save_file

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in _to_theirs(model.state_dict()).items()},
        str(d / "generator.safetensors"),
    )
    return d
