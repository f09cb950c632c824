"""Unit tokenizers: frame features -> k-means units -> optional dedup with durations.

Two kinds, each its own class over the shared :class:`UnitTokenizer`:

- ``ssl_units`` (:class:`SSLUnitTokenizer`): a transformers SSL encoder (HuBERT, wav2vec2, WavLM)
  at a chosen layer.
- ``mel_units`` (:class:`MelUnitTokenizer`): log-mel or MFCC features, "HuBERT iteration 0" units
  that need no pretrained weights. The default when no SSL checkpoint is given, and what the
  offline demo uses.

Config (YAML/JSON), e.g.::

    kind: ssl_units                 # or mel_units
    source: facebook/hubert-base-ls960   # ssl_units: hub id or local dir
    layer: 6
    features: {kind: mfcc, n_mfcc: 20, deltas: true}   # mel_units: MelConfig fields
    centroids: km500.safetensors    # from `tokunify train-kmeans` or `convert-kmeans`
    dedup: true
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokunify.tokenizers.base import (
    SpeechTokenizer,
    TokenizerConfigError,
    TokenizerOutput,
    dedup,
    resolve_path,
    tokenizer_class,
)
from tokunify.tokenizers.fairseq2_features import Fairseq2Features
from tokunify.tokenizers.features import FrameFeatures, MelConfig, MelFeatures, SSLFeatures
from tokunify.tokenizers.kmeans import KMeans


class UnitTokenizer(SpeechTokenizer):
    """Frame features (SSL layer or MFCC/log-mel) -> k-means units, ``[T]`` per utterance.

    ``UnitTokenizer(features, kmeans)`` gives the subclass of the features' kind.
    """

    stream_kind = "units"

    def __new__(cls, features: FrameFeatures, *args: Any, **kwargs: Any) -> UnitTokenizer:
        if cls is UnitTokenizer:
            cls = MelUnitTokenizer if isinstance(features, MelFeatures) else SSLUnitTokenizer
        return super().__new__(cls)

    def __init__(
        self,
        features: FrameFeatures,
        kmeans: KMeans | None,
        dedup: bool = True,
        centroids_path: str | Path | None = None,
    ):
        if kmeans is not None and kmeans.dim != features.dim:
            raise TokenizerConfigError(
                f"centroids {centroids_path or ''} have dim {kmeans.dim}, features have dim {features.dim}"
            )
        self.features = features
        self.kmeans = kmeans
        self.dedup = dedup
        self.centroids_path = str(centroids_path) if centroids_path is not None else None

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.features.frame_rate

    @property
    def cardinality(self) -> int:
        if self.kmeans is None:
            raise TokenizerConfigError(
                "this unit tokenizer has no centroids yet (train them with `tokunify train-kmeans`)"
            )
        return self.kmeans.k

    @property
    def min_samples(self) -> int:
        return self.features.min_samples

    def encode_batch(self, wavs: torch.Tensor, lengths: torch.Tensor) -> TokenizerOutput:
        feats = self.features(wavs, lengths)  # list of [T_i, D]
        km = self.kmeans
        if km is None:
            raise TokenizerConfigError(
                "this unit tokenizer has no centroids yet (train them with `tokunify train-kmeans`)"
            )
        sizes = [f.shape[0] for f in feats]
        units = km.assign(torch.cat(feats)).cpu().split(sizes)  # one matmul for the whole batch
        if not self.dedup:
            return TokenizerOutput(ids=list(units))
        pairs = [dedup(u) for u in units]
        return TokenizerOutput(ids=[p[0] for p in pairs], durations=[p[1] for p in pairs])

    @staticmethod
    def features_from_config(
        config: dict[str, Any], device: str | torch.device = "cpu"
    ) -> FrameFeatures:
        """The frame features a config of this kind describes."""
        raise NotImplementedError

    def _features_config(self) -> dict[str, Any]:
        """The features' part of :meth:`to_config`."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"kind": self.kind, **self._features_config()}
        cfg.update(
            centroids=self.centroids_path,
            dedup=self.dedup,
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            num_codebooks=1,
        )
        if self.kmeans is not None:
            cfg["cardinality"] = self.kmeans.k
        return cfg

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        base_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> UnitTokenizer:
        feats = cls.features_from_config(config, device)
        km = None
        path = config.get("centroids")
        if path:
            km = KMeans.load(resolve_path(path, base_dir)).to(device)
            card = config.get("cardinality")
            if card is not None and card != km.k:
                raise TokenizerConfigError(
                    f"{path}: {km.k} centroids, but the config says cardinality {card}"
                )
        return cls(feats, km, dedup=bool(config.get("dedup", True)), centroids_path=path)


class SSLUnitTokenizer(UnitTokenizer):
    """``ssl_units``: a transformers (or fairseq2) SSL encoder layer, then k-means."""

    kind = "ssl_units"

    @staticmethod
    def features_from_config(
        config: dict[str, Any], device: str | torch.device = "cpu"
    ) -> FrameFeatures:
        if config.get("backend") == "fairseq2":
            return Fairseq2Features.from_config(config, device)
        if "source" not in config or "layer" not in config:
            raise TokenizerConfigError(
                "ssl_units config needs 'source' (hub id or dir) and 'layer'"
            )
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(config.get("dtype", ""))
        return SSLFeatures.from_pretrained(
            config["source"],
            int(config["layer"]),
            normalize=config.get("normalize"),
            device=device,
            dtype=dtype,
        )

    def _features_config(self) -> dict[str, Any]:
        return self.features.to_config()  # source, layer, ... at the top level


class MelUnitTokenizer(UnitTokenizer):
    """``mel_units``: MFCC or log-mel frames (:class:`MelConfig` under ``features``), then k-means."""

    kind = "mel_units"

    @staticmethod
    def features_from_config(
        config: dict[str, Any], device: str | torch.device = "cpu"
    ) -> FrameFeatures:
        fields = config.get("features", {}) or {}
        try:
            return MelFeatures(MelConfig(**fields), device=device)
        except TypeError as e:
            raise TokenizerConfigError(f"mel_units features: {e}") from e

    def _features_config(self) -> dict[str, Any]:
        return {"features": self.features.to_config()}


def features_from_config(
    config: dict[str, Any], device: str | torch.device = "cpu"
) -> FrameFeatures:
    """Frame features of a unit tokenizer config, by its registered kind."""
    cls = tokenizer_class(config.get("kind"))
    if not issubclass(cls, UnitTokenizer):
        raise TokenizerConfigError(f"not a unit tokenizer kind: {config.get('kind')!r}")
    return cls.features_from_config(config, device)
