"""Continuous speech encoders: any transformers speech encoder, by hub id or local directory.

:class:`SpeechEncoder` wraps the encoder of one family from :data:`ENCODER_FAMILIES` (keyed by the
checkpoint's ``config.model_type``; no other code branches on it):

- ``whisper``: ``WhisperModel(...).encoder`` (a ``WhisperModel`` or
  ``WhisperForConditionalGeneration`` checkpoint, or an encoder saved by :meth:`SpeechEncoder.save`)
  on log-mel features from ``WhisperFeatureExtractor``, padded to the model's window (30 s for the
  released models); 50 Hz.
- ``wavlm``, ``hubert``, ``wav2vec2``, ``wav2vec2-conformer``: ``WavLMModel``, ``HubertModel``,
  ``Wav2Vec2Model``, ``Wav2Vec2ConformerModel`` on the raw 16 kHz waveform through
  ``Wav2Vec2FeatureExtractor`` (padding, attention mask, the checkpoint's own per-utterance
  normalisation if it has one); 50 Hz for the released models (``16000 / prod(conv_stride)``).

The output of ``tokunify train-ssl`` (``OUT/encoder``: a ``HubertModel`` saved with
``save_pretrained``, beside its ``ssl_head.safetensors``) loads as a ``hubert`` encoder.

``forward(wavs) -> (feats [B, T, D], lengths [B])``: ``lengths`` are the true frames of each wav
(:meth:`SpeechEncoder.output_lengths`; Whisper pads every input to its window, so its frames are
sliced to the longest true length), ``feats`` past them are zero. ``layer`` picks a hidden state
(``0`` the transformer input, ``L`` the last layer, ``-1`` the last) or ``"weighted"``: a learned
softmax-weighted sum of all of them (SUPERB's weighted-layer probe). ``freeze`` keeps the encoder's
weights fixed (and in eval mode) while the layer weights still learn.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    HubertModel,
    PreTrainedModel,
    Wav2Vec2ConformerModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMModel,
    WhisperFeatureExtractor,
    WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from tokunify.core.fsio import check_local_path
from tokunify.data.audio import AudioError, prepare

SAMPLE_RATE = 16000
ENCODER_FILE = "speech_encoder.json"
LAYER_WEIGHTS_FILE = "layer_weights.safetensors"

Layer = int | str
"""A hidden-state index (``-1``: the last) or ``"weighted"``."""


class EncoderError(ValueError):
    """A speech encoder cannot be loaded, or its input is unusable."""


# ---- families ------------------------------------------------------------------------------------
class EncoderFamily(ABC):
    """How one kind of transformers speech encoder is loaded, fed and measured."""

    name: str

    @abstractmethod
    def load_model(self, source: str) -> PreTrainedModel: ...

    @abstractmethod
    def load_feature_extractor(self, source: str, model: PreTrainedModel) -> Any: ...

    def num_layers(self, model: PreTrainedModel) -> int:
        return int(model.config.num_hidden_layers)

    def dim(self, model: PreTrainedModel) -> int:
        return int(model.config.hidden_size)

    @abstractmethod
    def output_lengths(self, model: Any, fe: Any, num_samples: torch.Tensor) -> torch.Tensor:
        """``[B]`` output frames of wavs of ``num_samples [B]`` samples."""

    @abstractmethod
    def frame_rate(self, model: Any, fe: Any) -> float: ...

    @abstractmethod
    def hidden_states(
        self, model: Any, fe: Any, wavs: list[np.ndarray], device: torch.device
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``(hidden states, L + 1 of them, each [B, T, D]; lengths [B])`` of 16 kHz wavs."""


class WaveformFamily(EncoderFamily):
    """wav2vec2-style encoders: a strided conv front-end on the raw 16 kHz waveform.

    A batch of wavs of different lengths runs as one padded batch with an attention mask only
    where that is exact: a LayerNorm front-end (a GroupNorm one normalises over the padding) and
    no convolution inside the layers (the Conformer's depthwise convolution reads the padding);
    otherwise one wav at a time, so a wav's features never depend on its batch.
    """

    def __init__(
        self, name: str, model_class: type[PreTrainedModel], convolution_in_layers: bool = False
    ):
        self.name, self.model_class = name, model_class
        self.convolution_in_layers = convolution_in_layers

    def pads_exactly(self, config: Any) -> bool:
        """Whether padding leaves the valid frames of a batch unchanged."""
        layer_norm = getattr(config, "feat_extract_norm", "group") == "layer"
        return layer_norm and not self.convolution_in_layers

    def load_model(self, source: str) -> PreTrainedModel:
        return _from_pretrained(self.model_class, source)

    def load_feature_extractor(self, source: str, model: PreTrainedModel) -> Any:
        """The checkpoint's own (its ``do_normalize``), else padding only (no normalisation, as
        ``train-ssl`` trains)."""
        if (Path(source) / "preprocessor_config.json").is_file() or not Path(source).exists():
            try:
                return Wav2Vec2FeatureExtractor.from_pretrained(source)
            except OSError:
                pass
        return Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=False)

    def output_lengths(self, model, fe, num_samples):
        return model._get_feat_extract_output_lengths(num_samples.long()).long()

    def frame_rate(self, model, fe):
        return SAMPLE_RATE / float(np.prod(model.config.conv_stride))

    def hidden_states(self, model, fe, wavs, device):
        n = torch.tensor([len(w) for w in wavs])
        frames = self.output_lengths(model, fe, n)
        if not self.pads_exactly(model.config) and len(set(n.tolist())) > 1:
            runs = [self.hidden_states(model, fe, [w], device)[0] for w in wavs]
            t = int(frames.max())
            return tuple(
                torch.cat([nn.functional.pad(r[k], (0, 0, 0, t - r[k].shape[1])) for r in runs])
                for k in range(len(runs[0]))
            ), frames
        batch = fe(
            wavs, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
            return_tensors="pt",
        )  # fmt: skip
        dtype = next(model.parameters()).dtype
        out = model(
            input_values=batch["input_values"].to(device, dtype),
            attention_mask=batch["attention_mask"].to(device),
            output_hidden_states=True,
        )
        return tuple(out.hidden_states), frames


class WhisperFamily(EncoderFamily):
    """The Whisper encoder on log-mel features, padded to the model's window (30 s for the released
    models: ``2 * max_source_positions`` mel frames); its true frames are sliced out."""

    name = "whisper"

    def load_model(self, source: str) -> PreTrainedModel:
        cfg = _config(source)
        if "WhisperEncoder" in (getattr(cfg, "architectures", None) or []):
            return _from_pretrained(WhisperEncoder, source)  # saved by tokunify: the encoder only
        # a WhisperModel or a WhisperForConditionalGeneration checkpoint
        return _from_pretrained(WhisperModel, source).encoder

    def load_feature_extractor(self, source: str, model: PreTrainedModel) -> Any:
        cfg = model.config
        try:
            fe = WhisperFeatureExtractor.from_pretrained(source)
        except OSError:
            fe = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, sampling_rate=SAMPLE_RATE)
        if fe.feature_size != cfg.num_mel_bins:
            raise EncoderError(
                f"{source}: feature extractor has {fe.feature_size} mel bins, the model {cfg.num_mel_bins}"
            )
        return fe

    def num_layers(self, model):
        return int(model.config.encoder_layers)

    def dim(self, model):
        return int(model.config.d_model)

    def window_samples(self, model: Any, fe: Any) -> int:
        """Samples of the model's input window (``max_source_positions`` x the conv strides mel frames)."""
        mel = model.config.max_source_positions * model.conv1.stride[0] * model.conv2.stride[0]
        return int(mel * fe.hop_length)

    def mel_frames(self, fe: Any, num_samples: torch.Tensor) -> torch.Tensor:
        """Mel frames holding audio, as the feature extractor's attention mask counts them."""
        return torch.div(
            num_samples.long() + fe.hop_length - 1, fe.hop_length, rounding_mode="floor"
        )

    def output_lengths(self, model, fe, num_samples):
        return model._get_feat_extract_output_lengths(self.mel_frames(fe, num_samples)).long()

    def frame_rate(self, model, fe):
        return SAMPLE_RATE / (fe.hop_length * model.conv1.stride[0] * model.conv2.stride[0])

    def hidden_states(self, model, fe, wavs, device):
        window = self.window_samples(model, fe)
        long = [i for i, w in enumerate(wavs) if len(w) > window]
        if long:
            i = long[0]
            raise EncoderError(
                f"audio {i}: {len(wavs[i]) / SAMPLE_RATE:.2f} s is longer than the Whisper "
                f"encoder's window ({window / SAMPLE_RATE:.2f} s); cut it first"
            )
        feats = fe(
            wavs, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=window,
            return_tensors="pt",
        )["input_features"]  # fmt: skip  # [B, n_mels, window / hop]
        dtype = next(model.parameters()).dtype
        out = model(feats.to(device, dtype), output_hidden_states=True)
        frames = self.output_lengths(model, fe, torch.tensor([len(w) for w in wavs]))
        t = int(frames.max())
        return tuple(h[:, :t] for h in out.hidden_states), frames


ENCODER_FAMILIES: dict[str, EncoderFamily] = {
    "whisper": WhisperFamily(),
    "wavlm": WaveformFamily("wavlm", WavLMModel),
    "hubert": WaveformFamily("hubert", HubertModel),  # also tokunify train-ssl's OUT/encoder
    "wav2vec2": WaveformFamily("wav2vec2", Wav2Vec2Model),
    "wav2vec2-conformer": WaveformFamily(
        "wav2vec2-conformer", Wav2Vec2ConformerModel, convolution_in_layers=True
    ),
}
"""``config.model_type`` -> family: the one table of supported encoders."""


def _config(source: str) -> Any:
    try:
        check_local_path(source, "speech encoder: a model directory or a hub id")
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise EncoderError(
            f"{source}: cannot read a model config: {str(e).splitlines()[0]}"
        ) from None


def _from_pretrained(cls: type[PreTrainedModel], source: str) -> PreTrainedModel:
    """``cls.from_pretrained(source)``, refusing a checkpoint that leaves weights uninitialised."""
    try:
        model, info = cls.from_pretrained(source, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise EncoderError(
            f"{source}: cannot load a {cls.__name__}: {str(e).splitlines()[0]}"
        ) from None
    missing = list(info.get("missing_keys", []))
    if missing:
        raise EncoderError(
            f"{source}: not a {cls.__name__} checkpoint: {len(missing)} weights missing "
            f"(e.g. {sorted(missing)[0]!r})"
        )
    return model


def family_of(source: str) -> EncoderFamily:
    """The family of a checkpoint (its ``config.model_type``); unknown types list the known ones."""
    model_type = getattr(_config(source), "model_type", None)
    if model_type not in ENCODER_FAMILIES:
        raise EncoderError(
            f"{source}: model type {model_type!r} is not a supported speech encoder; "
            f"supported: {sorted(ENCODER_FAMILIES)}"
        )
    return ENCODER_FAMILIES[model_type]


# ---- the encoder module ----------------------------------------------------------------------------
def _check_layer(layer: Layer, n_layers: int, source: str) -> Layer:
    if layer == "weighted":
        return layer
    if (
        isinstance(layer, bool)
        or not isinstance(layer, int)
        or not -(n_layers + 1) <= layer <= n_layers
    ):
        raise EncoderError(
            f"{source}: layer must be 'weighted' or an int in [-{n_layers + 1}, {n_layers}] "
            f"(0: the transformer input, {n_layers}: the last layer), got {layer!r}"
        )
    return layer


class SpeechEncoder(nn.Module):
    """A transformers speech encoder: ``forward(wavs) -> (feats [B, T, D], lengths [B])``.

    >>> enc = SpeechEncoder.from_pretrained("microsoft/wavlm-base-plus", layer="weighted", freeze=True)
    >>> feats, lengths = enc([np.zeros(16000, np.float32)])  # [1, 49, 768], [49]
    """

    def __init__(
        self,
        family: EncoderFamily,
        model: PreTrainedModel,
        feature_extractor: Any,
        layer: Layer = -1,
        freeze: bool = True,
        source: str = "",
    ):
        super().__init__()
        self.family, self.model, self.feature_extractor = family, model, feature_extractor
        self.source, self.freeze = source, bool(freeze)
        self.num_layers = family.num_layers(model)
        self.layer = _check_layer(layer, self.num_layers, source or family.name)
        self.dim = family.dim(model)
        self.layer_weights = (
            nn.Parameter(torch.zeros(self.num_layers + 1)) if self.layer == "weighted" else None
        )  # [L + 1], softmax-normalised
        if self.freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        layer: Layer = -1,
        freeze: bool = True,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> SpeechEncoder:
        """Load by hub id or local directory (including one written by :meth:`save`)."""
        source = str(source)
        family = family_of(source)
        model = family.load_model(source)
        fe = family.load_feature_extractor(source, model)
        enc = cls(family, model, fe, layer=layer, freeze=freeze, source=source)
        weights = Path(source) / LAYER_WEIGHTS_FILE
        if enc.layer_weights is not None and weights.is_file():
            w = load_file(str(weights))["layer_weights"]
            if w.shape != enc.layer_weights.shape:
                raise EncoderError(
                    f"{weights}: {w.numel()} layer weights, the encoder has {enc.num_layers + 1} hidden states"
                )
            enc.layer_weights.data.copy_(w)
        return enc.to(device=device, dtype=dtype) if dtype is not None else enc.to(device)

    @property
    def frame_rate(self) -> float:
        """Output frames per second."""
        return self.family.frame_rate(self.model, self.feature_extractor)

    @property
    def config(self) -> dict[str, Any]:
        """What :meth:`from_pretrained` needs besides the directory."""
        return {"family": self.family.name, "layer": self.layer, "freeze": self.freeze}

    def train(self, mode: bool = True) -> SpeechEncoder:
        super().train(mode)
        if self.freeze:
            self.model.eval()  # a frozen encoder never drops out or masks
        return self

    def output_lengths(self, num_samples: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``[B]`` frames of wavs of ``num_samples`` samples at 16 kHz (exact)."""
        n = torch.as_tensor(num_samples, dtype=torch.long).reshape(-1)
        return self.family.output_lengths(self.model, self.feature_extractor, n)

    def prepare(
        self, wavs: Sequence[np.ndarray] | np.ndarray, sample_rate: int | Sequence[int]
    ) -> list[np.ndarray]:
        """Mono float32 16 kHz wavs (resampled with soxr where a rate differs), checked."""
        items = (
            [np.asarray(w) for w in wavs]
            if not isinstance(wavs, np.ndarray) or wavs.ndim > 1
            else [wavs]
        )
        rates = [sample_rate] * len(items) if isinstance(sample_rate, int) else list(sample_rate)
        if len(rates) != len(items):
            raise EncoderError(f"{len(items)} wavs but {len(rates)} sample rates")
        try:
            return [
                prepare(w, int(sr), SAMPLE_RATE, f"audio {i}")
                for i, (w, sr) in enumerate(zip(items, rates, strict=True))
            ]
        except AudioError as e:
            raise EncoderError(str(e)) from None

    def forward(
        self,
        wavs: Sequence[np.ndarray] | np.ndarray,
        sample_rate: int | Sequence[int] = SAMPLE_RATE,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wavs`` (a list of ``[N_i]`` arrays, or ``[B, N]``) -> ``(feats [B, T, D], lengths [B])``."""
        items = self.prepare(wavs, sample_rate)
        device = next(self.model.parameters()).device
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            states, lengths = self.family.hidden_states(
                self.model, self.feature_extractor, items, device
            )
        if self.layer_weights is None:
            h = states[self.layer]  # [B, T, D]
        else:
            w = torch.softmax(self.layer_weights, dim=0).to(states[0].dtype)  # [L + 1]
            h = torch.einsum("l,lbtd->btd", w, torch.stack(states))  # [B, T, D]
        lengths = lengths.to(h.device)
        mask = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]  # [B, T]
        return h * mask[..., None].to(h.dtype), lengths

    def save(self, path: str | Path) -> Path:
        """``save_pretrained`` of the encoder (Whisper: the encoder only) and its feature extractor,
        the learned layer weights, and ``speech_encoder.json`` (family, layer, freeze)."""
        p = Path(path)
        self.model.save_pretrained(p)
        self.feature_extractor.save_pretrained(p)
        if self.layer_weights is not None:
            save_file(
                {"layer_weights": self.layer_weights.detach().cpu().contiguous()},
                str(p / LAYER_WEIGHTS_FILE),
            )
        (p / ENCODER_FILE).write_text(
            json.dumps({**self.config, "source": self.source}, indent=2) + "\n"
        )
        return p


__all__ = [
    "ENCODER_FAMILIES",
    "EncoderError",
    "EncoderFamily",
    "SpeechEncoder",
    "WaveformFamily",
    "WhisperFamily",
    "family_of",
]
