"""Frame features for unit tokenizers: a transformers SSL encoder at a chosen layer, or log-mel/MFCC.

Both take a zero-padded batch ``[B, N]`` with lengths and return a list of ``[T_i, D]`` features,
identical (to float precision) to running each utterance alone:

- SSL: only the layers up to the chosen one run (the CPU win). For conv front-ends with group norm
  (HuBERT/wav2vec2 base), whose statistics span the whole time axis, the conv front-end runs per
  utterance; the transformer then runs batched with an attention mask.
- Mel/MFCC ("HuBERT iteration 0" features, no pretrained weights): frames are taken without
  centre padding, so no frame of a padded batch sees the padding; deltas, CMVN and splicing (context
  frames stacked for an LDA projection, see ``tokenizers/lda.py``) are per utterance.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tokunify.core.fsio import check_local_path
from tokunify.data.melspec import LogMel, MelSpec


class FeatureError(ValueError):
    pass


class FrameFeatures(ABC):
    sample_rate: int
    dim: int

    @property
    @abstractmethod
    def frame_rate(self) -> float: ...

    @abstractmethod
    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames produced for inputs of ``lengths`` samples."""

    @property
    def min_samples(self) -> int:
        n = 1
        while int(self.num_frames(torch.tensor([n]))[0]) < 1:
            n *= 2
        lo, hi = n // 2, n
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if int(self.num_frames(torch.tensor([mid]))[0]) < 1 else (lo, mid)
        return hi

    @abstractmethod
    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """``[B, N]``, ``[B]`` -> list of ``[T_i, D]``."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]: ...


class ConvStackFeatures(FrameFeatures):
    """Encoders whose frames come from a stack of strided windows ``_kernels = [(kernel, stride)]``."""

    _kernels: list[tuple[int, int]]

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / float(np.prod([s for _, s in self._kernels]))

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        n = lengths.clone().long()
        for k, s in self._kernels:
            n = torch.div(n - k, s, rounding_mode="floor") + 1
        return n.clamp(min=0)


# ---- SSL encoders (transformers) -----------------------------------------------------------------
class SSLFeatures(ConvStackFeatures):
    """Hidden states of layer ``layer`` of a transformers HuBERT / wav2vec2 / WavLM encoder.

    ``layer`` counts like ``output_hidden_states``: 0 is the transformer input, ``L`` the output of
    the L-th transformer layer. Loaded by hub id or local path through ``AutoModel``.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int,
        source: str = "",
        normalize: bool | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ):
        for attr in ("feature_extractor", "feature_projection", "encoder"):
            if not hasattr(model, attr):
                raise FeatureError(
                    f"{source or type(model).__name__}: not a wav2vec2-style SSL encoder (no {attr})"
                )
        cfg = model.config
        n_layers = cfg.num_hidden_layers
        if not 0 <= layer <= n_layers:
            raise FeatureError(f"{source}: layer {layer} out of range 0..{n_layers}")
        self.source, self.layer, self.n_layers = source, layer, n_layers
        self.sample_rate = 16000
        self.dim = cfg.hidden_size
        self.normalize = bool(normalize) if normalize is not None else False
        self.group_norm_frontend = getattr(cfg, "feat_extract_norm", "group") == "group"
        self.device, self.dtype = torch.device(device), dtype
        self.model = truncate_encoder(model, layer).eval().to(self.device)
        if dtype is not None:
            self.model = self.model.to(dtype)
        self._kernels = list(zip(cfg.conv_kernel, cfg.conv_stride, strict=True))

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        layer: int,
        normalize: bool | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> SSLFeatures:
        from transformers import AutoModel

        check_local_path(source, "ssl_units source: an encoder directory or a hub id")
        try:
            model = AutoModel.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise FeatureError(f"{source}: cannot load an SSL encoder: {e}") from e
        if normalize is None:
            normalize = _feature_extractor_normalizes(source)
        return cls(model, layer, source=source, normalize=normalize, device=device, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        x = wavs.to(self.device, self.dtype or torch.float32)  # [B, N]
        lengths = lengths.to(self.device)
        valid = torch.arange(x.shape[1], device=self.device)[None, :] < lengths[:, None]  # [B, N]
        if self.normalize:  # per-utterance zero mean / unit variance over the valid samples
            n = lengths[:, None].to(x.dtype)
            mean = (x * valid).sum(1, keepdim=True) / n
            var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
            x = ((x - mean) / torch.sqrt(var + 1e-7)) * valid
        frames = self.num_frames(lengths)  # [B]
        t_max = int(frames.max())
        if self.group_norm_frontend:
            feats = torch.zeros(
                x.shape[0], m.config.conv_dim[-1], t_max, device=self.device, dtype=x.dtype
            )
            for i in range(x.shape[0]):
                feats[i, :, : frames[i]] = m.feature_extractor(x[i : i + 1, : lengths[i]])[0]
        else:
            feats = m.feature_extractor(x * valid)[:, :, :t_max]  # [B, C, T]
        feats = feats.transpose(1, 2)  # [B, T, C]
        hidden = m.feature_projection(feats)
        hidden = (
            hidden[0] if isinstance(hidden, tuple) else hidden
        )  # wav2vec2/WavLM return (h, norm_feats)
        mask = torch.arange(t_max, device=self.device)[None, :] < frames[:, None]  # [B, T]
        out = m.encoder(hidden, attention_mask=mask)[0]  # [B, T, D]
        return [out[i, : frames[i]].float() for i in range(out.shape[0])]

    def to_config(self) -> dict[str, Any]:
        return {"source": self.source, "layer": self.layer, "normalize": self.normalize}


def truncate_encoder(model: nn.Module, layer: int) -> nn.Module:
    """A copy of ``model`` whose encoder output equals ``hidden_states[layer]`` of the full model.

    Only ``layer`` transformer layers remain. Pre-LN encoders ("stable layer norm") apply a final
    LayerNorm after the last layer, which ``hidden_states[layer]`` of the full model only has when
    ``layer`` is the last; it is dropped otherwise.
    """
    m = copy.copy(model)
    enc = copy.copy(model.encoder)
    enc._modules = dict(enc._modules)
    enc.layers = nn.ModuleList(list(model.encoder.layers)[:layer])
    if (
        getattr(model.config, "do_stable_layer_norm", False)
        and layer < model.config.num_hidden_layers
    ):
        enc.layer_norm = nn.Identity()
    m._modules = dict(m._modules)
    m.encoder = enc
    return m


def _feature_extractor_normalizes(source: str) -> bool:
    from transformers import AutoFeatureExtractor

    try:
        fe = AutoFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError):
        return False
    return bool(getattr(fe, "do_normalize", False))


# ---- log-mel / MFCC ---------------------------------------------------------------------------
@dataclass
class MelConfig:
    """Spectral features for offline units (HuBERT iteration 0 used 39-dim MFCC + deltas)."""

    kind: Literal["mfcc", "logmel"] = "mfcc"
    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 320  # 20 ms: the 50 Hz frame rate of HuBERT units
    n_mels: int = 40
    n_mfcc: int = 20
    deltas: bool = True
    cmvn: Literal["none", "utterance"] = "utterance"
    splice: int = 0  # frames of context stacked on each side (edges replicated), after CMVN
    fmin: float = 20.0
    fmax: float | None = None


class MelFeatures(FrameFeatures):
    """Log-mel or MFCC (+ deltas, per-utterance CMVN), batched in torch, no pretrained weights."""

    def __init__(self, config: MelConfig | None = None, device: str | torch.device = "cpu"):

        self.cfg = c = config or MelConfig()
        if c.win_length > c.n_fft:
            raise FeatureError(f"win_length {c.win_length} > n_fft {c.n_fft}")
        if c.splice < 0:
            raise FeatureError(f"splice must be >= 0, got {c.splice}")
        self.sample_rate = c.sample_rate
        self.device = torch.device(device)
        spec = MelSpec(
            sample_rate=c.sample_rate,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            n_mels=c.n_mels,
            win_length=c.win_length,
            fmin=c.fmin,
            fmax=c.fmax,
            power=2,
            log_floor=1e-6,
        )
        self.logmel = LogMel(spec).to(self.device)
        base = c.n_mfcc if c.kind == "mfcc" else c.n_mels
        self.dim = base * (3 if c.deltas else 1) * (2 * c.splice + 1)
        self.dct = _dct_matrix(c.n_mels, c.n_mfcc).to(self.device)  # [M, n_mfcc]

    @property
    def frame_rate(self) -> float:
        return self.cfg.sample_rate / self.cfg.hop_length

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return torch.where(
            lengths >= c.n_fft,
            torch.div(lengths - c.n_fft, c.hop_length, rounding_mode="floor") + 1,
            0,
        )

    @torch.inference_mode()
    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        c = self.cfg
        x = wavs.to(self.device, torch.float32)
        feats = self.logmel(x)  # [B, T, M]
        if c.kind == "mfcc":
            feats = feats @ self.dct  # [B, T, n_mfcc]
        frames = self.num_frames(lengths.to(self.device))
        out = []
        for i in range(x.shape[0]):
            f = feats[i, : frames[i]]  # [T_i, d]
            if c.deltas:
                d1 = _delta(f)
                f = torch.cat([f, d1, _delta(d1)], dim=1)
            if c.cmvn == "utterance" and f.shape[0] > 0:
                f = (f - f.mean(0)) / (f.std(0, unbiased=False) + 1e-5)
            if c.splice:
                f = _splice(f, c.splice)
            out.append(f)
        return out

    def to_config(self) -> dict[str, Any]:
        return asdict(self.cfg)


def _dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II as a ``[n_in, n_out]`` matrix (what MFCC applies to log-mel)."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)
    m = torch.cos(math.pi / n_in * (n[:, None] + 0.5) * k[None, :]) * (2.0 / n_in) ** 0.5
    m[:, 0] /= 2**0.5
    return m.float()


def _splice(f: torch.Tensor, k: int) -> torch.Tensor:
    """``[T, d]`` -> ``[T, (2k + 1) d]``: frames ``t-k .. t+k`` side by side, edges replicated."""
    if f.shape[0] == 0:
        return f.new_zeros(0, f.shape[1] * (2 * k + 1))
    pad = torch.cat([f[:1].expand(k, -1), f, f[-1:].expand(k, -1)])  # [T + 2k, d]
    return torch.cat([pad[i : i + f.shape[0]] for i in range(2 * k + 1)], dim=1)


def _delta(f: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over ``±width`` frames with edge replication (HTK formula)."""
    if f.shape[0] == 0:
        return f
    pad = torch.cat([f[:1].expand(width, -1), f, f[-1:].expand(width, -1)])  # [T + 2w, d]
    t = f.shape[0]
    num = sum(
        n * (pad[width + n : width + n + t] - pad[width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return num / (2 * sum(n * n for n in range(1, width + 1)))
