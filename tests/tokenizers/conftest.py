"""Tiny random SSL encoders, built and saved to temp dirs, loaded through the real code paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SSL_COMMON = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16),
    conv_stride=(5, 4, 4),
    conv_kernel=(10, 4, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
SSL_KINDS = {
    "hubert": ("HubertConfig", "HubertModel", {}),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", {}),
    "wav2vec2-stable": (
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        {"do_stable_layer_norm": True, "feat_extract_norm": "layer"},
    ),
    "wavlm": ("WavLMConfig", "WavLMModel", {}),
}


def build_ssl(kind: str, out: Path) -> Path:
    import transformers

    cfg_name, model_name, extra = SSL_KINDS[kind]
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(
        getattr(transformers, cfg_name)(**SSL_COMMON, **extra)
    )
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session", params=sorted(SSL_KINDS))
def ssl_dir(request, tmp_path_factory) -> Path:
    return build_ssl(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="session")
def hubert_dir(tmp_path_factory) -> Path:
    return build_ssl("hubert", tmp_path_factory.mktemp("hubert"))
