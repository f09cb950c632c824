"""fairseq2 wav2vec2 encoders as a feature source for unit tokenizers (``pip install tokunify[fairseq2]``).

Config (the same ``ssl_units`` tokenizer, k-means and dedup as the transformers source)::

    kind: ssl_units
    backend: fairseq2
    source: wav2vec2_base          # a fairseq2 asset name (downloads when online), or a local
                                   # checkpoint file written by save_fairseq2_wav2vec2
    family: wav2vec2               # or w2vbert (80-bin fbank front-end, conformer layers)
    layer: 6

:func:`hf_wav2vec2_to_fairseq2` converts a transformers ``Wav2Vec2Model`` (post-LN, group-norm
front-end, the base recipe) to fairseq2; both give the same layer outputs (tested in CI leg 2).
w2v-BERT models run through their wav2vec2 (conformer) backbone on fbank features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tokunify.tokenizers.features import ConvStackFeatures, FeatureError

# transformers Wav2Vec2Model parameter -> fairseq2 Wav2Vec2Model parameter (first match wins)
_HF_TO_FS2: list[tuple[str, str]] = [
    (r"^masked_spec_embed$", "masker.temporal_mask_embed"),
    (
        r"^feature_extractor\.conv_layers\.(\d+)\.conv\.",
        r"encoder_frontend.feature_extractor.layers.\1.conv.",
    ),
    (
        r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.",
        r"encoder_frontend.feature_extractor.layers.\1.group_norm.",
    ),
    (r"^feature_projection\.layer_norm\.", "encoder_frontend.post_extract_layer_norm."),
    (r"^feature_projection\.projection\.", "encoder_frontend.model_dim_proj."),
    (
        r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$",
        "encoder_frontend.pos_encoder.conv.weight_g",
    ),
    (
        r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$",
        "encoder_frontend.pos_encoder.conv.weight_v",
    ),
    (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder_frontend.pos_encoder.conv.bias"),
    (r"^encoder\.layer_norm\.", "encoder_frontend.layer_norm."),
    (
        r"^encoder\.layers\.(\d+)\.attention\.out_proj\.",
        r"encoder.layers.\1.self_attn.output_proj.",
    ),
    (r"^encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (
        r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.",
        r"encoder.layers.\1.ffn.inner_proj.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.",
        r"encoder.layers.\1.ffn.output_proj.",
    ),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.ffn_layer_norm."),
]


def _hub(family: str = "wav2vec2") -> Any:
    try:
        import fairseq2
    except ImportError as e:
        raise FeatureError(
            "the fairseq2 backend needs `pip install tokunify[fairseq2]` (torch 2.9.1)"
        ) from e
    from fairseq2.error import InvalidOperationError

    with contextlib.suppress(InvalidOperationError):  # already initialised in this process
        fairseq2.init_fairseq2()
    if family == "w2vbert":
        from fairseq2.models.w2vbert import get_w2vbert_model_hub

        return get_w2vbert_model_hub()
    if family != "wav2vec2":
        raise FeatureError(f"unknown fairseq2 family {family!r} (wav2vec2 or w2vbert)")
    from fairseq2.models.wav2vec2 import get_wav2vec2_model_hub

    return get_wav2vec2_model_hub()


def encoder_overrides(hf_config: Any) -> dict[str, Any]:
    """Fields of fairseq2's ``base`` wav2vec2 encoder config that reproduce a transformers config."""
    if (
        getattr(hf_config, "do_stable_layer_norm", False)
        or getattr(hf_config, "feat_extract_norm", "group") != "group"
    ):
        raise FeatureError(
            "only the post-LN, group-norm wav2vec2 (base) layout converts to fairseq2 here"
        )
    return dict(
        model_dim=hf_config.hidden_size,
        num_encoder_layers=hf_config.num_hidden_layers,
        num_encoder_attn_heads=hf_config.num_attention_heads,
        ffn_inner_dim=hf_config.intermediate_size,
        feature_dim=hf_config.conv_dim[-1],
        feature_extractor_layer_descs=list(zip(hf_config.conv_dim, hf_config.conv_kernel, hf_config.conv_stride, strict=True)),
        feature_extractor_bias=bool(hf_config.conv_bias),
        pos_conv_kernel_size=hf_config.num_conv_pos_embeddings,
        num_pos_conv_groups=hf_config.num_conv_pos_embedding_groups,
        dropout_p=0.0, attn_dropout_p=0.0, ffn_inner_dropout_p=0.0, layer_drop_p=0.0, first_pass_dropout_p=0.0,
    )  # fmt: skip


def fairseq2_config(
    arch: str = "base", overrides: dict[str, Any] | None = None, family: str = "wav2vec2"
) -> Any:
    """A wav2vec2 model config: a fairseq2 arch (of the wav2vec2 family, or the wav2vec2 backbone of
    a w2v-BERT arch) with encoder fields overridden."""
    cfg = _hub(family).get_arch_config(arch)
    if family == "w2vbert":
        cfg = cfg.w2v2_config
    if not overrides:
        return cfg
    ov = dict(overrides)
    if "feature_extractor_layer_descs" in ov:
        ov["feature_extractor_layer_descs"] = [
            tuple(d) for d in ov["feature_extractor_layer_descs"]
        ]
    return dataclasses.replace(cfg, encoder_config=dataclasses.replace(cfg.encoder_config, **ov))


def hf_wav2vec2_to_fairseq2(hf_model: nn.Module) -> nn.Module:
    """A fairseq2 ``Wav2Vec2Model`` with the weights of a transformers ``Wav2Vec2Model``."""
    model = _hub().create_new_model(fairseq2_config("base", encoder_overrides(hf_model.config)))
    model.tokunify_encoder = encoder_overrides(
        hf_model.config
    )  # recorded by save_fairseq2_wav2vec2
    target = model.state_dict()
    out = dict(target)  # pre-training heads (quantizer, final projections) keep their init
    for key, value in hf_model.state_dict().items():
        new = key
        for pat, rep in _HF_TO_FS2:
            new, n = re.subn(pat, rep, key)
            if n:
                break
        if new not in target or target[new].shape != value.shape:
            raise FeatureError(
                f"wav2vec2 conversion: {key} -> {new} does not fit the fairseq2 model"
            )
        out[new] = value
    model.load_state_dict(out)
    return model.eval()


def save_fairseq2_wav2vec2(
    model: nn.Module,
    path: str | Path,
    arch: str = "base",
    family: str = "wav2vec2",
    encoder: dict[str, Any] | None = None,
) -> Path:
    """A local checkpoint of a wav2vec2 model or of a w2v-BERT's wav2vec2 backbone:
    ``{"model", "family", "arch", "encoder"}`` in plain types (loads with ``weights_only=True``)."""
    enc = encoder if encoder is not None else (getattr(model, "tokunify_encoder", None) or {})
    torch.save(
        {"model": model.state_dict(), "family": family, "arch": arch, "encoder": enc}, str(path)
    )
    return Path(path)


class Fairseq2Features(ConvStackFeatures):
    """Layer ``layer`` (0: the transformer input) of a fairseq2 wav2vec2 encoder.

    The convolutional front-end runs per utterance (its group norm spans the time axis); the
    transformer runs batched with a ``BatchLayout``, so a padded batch equals single utterances.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int,
        source: str = "",
        arch: str | None = None,
        device: str | torch.device = "cpu",
    ):
        model = getattr(model, "w2v2_model", model)  # w2v-BERT: its wav2vec2 (conformer) backbone
        n = len(model.encoder.layers)
        if not 0 <= layer <= n:
            raise FeatureError(f"{source}: layer {layer} out of range 0..{n}")
        self.model, self.layer, self.source, self.arch = (
            model.eval().to(device),
            layer,
            source,
            arch,
        )
        self.device = torch.device(device)
        self.sample_rate = 16000
        self.dim = model.model_dim
        fe = self.model.encoder_frontend.feature_extractor
        self.fbank = not hasattr(fe, "layers")  # w2v-BERT: 80-bin fbank, `stride` frames stacked
        if self.fbank:
            from fairseq2.data.audio import WaveformToFbankConverter

            self._fbank = WaveformToFbankConverter(
                num_mel_bins=fe.num_fbank_channels,
                waveform_scale=2**15,
                channel_last=True,
                standardize=True,
            )
            self._kernels = [
                (400, 160),
                (fe.stride, fe.stride),
            ]  # kaldi fbank: 25 ms every 10 ms, snip edges
        else:
            self._kernels = [
                (layer.conv.kernel_size[0], layer.conv.stride[0]) for layer in fe.layers
            ]

    @classmethod
    def from_config(
        cls, config: dict[str, Any], device: str | torch.device = "cpu"
    ) -> Fairseq2Features:
        hub = _hub()
        source, layer = str(config["source"]), int(config["layer"])
        p = Path(source)
        if p.is_file():
            state = torch.load(str(p), map_location="cpu", weights_only=True)
            family = str(state.get("family") or config.get("family", "wav2vec2"))
            arch = str(state.get("arch") or config.get("arch", "base"))
            model = hub.create_new_model(fairseq2_config(arch, state.get("encoder"), family))
            try:
                model.load_state_dict(state.get("model", state))
            except RuntimeError as e:
                raise FeatureError(
                    f"{p}: does not match fairseq2 wav2vec2 arch {arch!r} ({e})"
                ) from e
            return cls(model, layer, source, arch, device)
        try:
            model = _hub(config.get("family", "wav2vec2")).load_model(source)
        except Exception as e:
            raise FeatureError(
                f"{source}: not a local checkpoint, and fairseq2 cannot load the asset ({e})"
            ) from e
        return cls(model, layer, source, None, device)

    @torch.inference_mode()
    def __call__(self, wavs: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        from fairseq2.models.transformer import AttentionBiasCache
        from fairseq2.nn import BatchLayout

        fe = self.model.encoder_frontend
        x = wavs.to(self.device, torch.float32)
        frames = [int(f) for f in self.num_frames(lengths)]
        feats = []
        for i, n in enumerate(
            lengths.tolist()
        ):  # per utterance: group-norm / fbank statistics span time
            seq = x[i : i + 1, :n]
            if self.fbank:
                seq = self._fbank(
                    {"waveform": seq[0, :, None].cpu(), "sample_rate": float(self.sample_rate)}
                )["fbank"][None].to(self.device)
            f, _, _ = fe.extract_features(
                seq, BatchLayout(seq.shape[:2], [seq.shape[1]], device=self.device)
            )
            feats.append(f[0, : frames[i]])
        padded = nn.utils.rnn.pad_sequence(feats, batch_first=True)  # [B, T, C]
        layout = BatchLayout(padded.shape[:2], frames, device=self.device)
        seqs, _ = fe.process_features(padded, layout, None)
        cache = AttentionBiasCache()
        for layer in list(self.model.encoder.layers)[: self.layer]:
            seqs = layer(seqs, layout, cache)
        return [seqs[i, : frames[i]].float() for i in range(len(frames))]

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"backend": "fairseq2", "source": self.source, "layer": self.layer}
        if self.arch:
            cfg["arch"] = self.arch
        return cfg
