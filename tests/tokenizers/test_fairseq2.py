"""fairseq2 feature source (CI leg 2, where the fairseq2 extra is installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

fairseq2 = pytest.importorskip("fairseq2")

from transformers import Wav2Vec2Config, Wav2Vec2Model  # noqa: E402

from tokunify.tokenizers.base import tokenizer_from_config  # noqa: E402
from tokunify.tokenizers.fairseq2_features import (  # noqa: E402
    Fairseq2Features,
    hf_wav2vec2_to_fairseq2,
    save_fairseq2_wav2vec2,
)
from tokunify.tokenizers.features import SSLFeatures  # noqa: E402
from tokunify.tokenizers.kmeans import KMeans  # noqa: E402

HF = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16, 16),
          conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)  # fmt: skip


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    hf = Wav2Vec2Model(Wav2Vec2Config(**HF)).eval()
    return hf, hf_wav2vec2_to_fairseq2(hf)


def batch(lengths):
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(n, generator=g) * 0.1 for n in lengths]
    x = torch.zeros(len(wavs), max(lengths))
    for i, w in enumerate(wavs):
        x[i, : len(w)] = w
    return wavs, x, torch.tensor(lengths)


@pytest.mark.parametrize("layer", [0, 1, 3])
def test_fairseq2_and_transformers_agree(models, layer):
    hf, fs2 = models
    wavs, x, lens = batch([4000, 5600, 3100])
    a = SSLFeatures(hf, layer)(x, lens)
    b = Fairseq2Features(fs2, layer)(x, lens)
    for fa, fb in zip(a, b, strict=True):
        assert fa.shape == fb.shape
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)
    single = [Fairseq2Features(fs2, layer)(w[None], torch.tensor([len(w)]))[0] for w in wavs]
    for fb, fs in zip(b, single, strict=True):  # padded batch == one at a time
        torch.testing.assert_close(fb, fs, atol=1e-5, rtol=1e-5)


def local_checkpoint_tokenizer(ckpt, tmp_path):  # type: ignore[no-untyped-def]
    """A fairseq2-backend unit tokenizer on a local checkpoint, layer 2, ``tmp_path/c.safetensors``."""
    config = {"kind": "ssl_units", "backend": "fairseq2", "source": str(ckpt), "layer": 2, "centroids": "c.safetensors"}  # fmt: skip
    return tokenizer_from_config(config, base_dir=tmp_path)


def test_local_checkpoint_through_the_tokenizer_config(models, tmp_path):
    hf, fs2 = models
    ckpt = save_fairseq2_wav2vec2(fs2, tmp_path / "w2v.pt")
    feats = Fairseq2Features(fs2, 2)
    wavs, x, lens = batch([4000, 4800])
    km = KMeans.fit(torch.cat(feats(x, lens)), 8, seed=0)
    km.save(tmp_path / "c.safetensors")
    tok = local_checkpoint_tokenizer(ckpt, tmp_path)
    assert (
        tok.kind == "ssl_units"
        and tok.to_config()["backend"] == "fairseq2"
        and tok.frame_rate == 200.0
    )
    ref = tokenizer_from_config(
        {
            "kind": "ssl_units",
            "source": str(_save_hf(hf, tmp_path)),
            "layer": 2,
            "centroids": "c.safetensors",
        },
        base_dir=tmp_path,
    )
    a, b = tok.encode([w.numpy() for w in wavs]), ref.encode([w.numpy() for w in wavs])
    assert all(
        np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.ids, b.ids, strict=True)
    )  # same units


def _save_hf(hf, tmp_path):
    hf.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def test_w2vbert_backbone_from_a_local_checkpoint(tmp_path):
    import dataclasses

    from fairseq2.models.w2vbert import get_w2vbert_model_hub

    overrides = dict(model_dim=32, num_encoder_layers=3, num_encoder_attn_heads=2, ffn_inner_dim=64, depthwise_conv_kernel_size=5,
                     dropout_p=0.0, attn_dropout_p=0.0, ffn_inner_dropout_p=0.0, layer_drop_p=0.0, first_pass_dropout_p=0.0)  # fmt: skip
    hub = get_w2vbert_model_hub()
    cfg = hub.get_arch_config("300m")
    cfg = dataclasses.replace(
        cfg,
        num_bert_encoder_layers=1,
        w2v2_config=dataclasses.replace(
            cfg.w2v2_config,
            encoder_config=dataclasses.replace(cfg.w2v2_config.encoder_config, **overrides),
        ),
    )
    torch.manual_seed(0)
    model = hub.create_new_model(cfg).eval()
    ckpt = save_fairseq2_wav2vec2(
        model.w2v2_model, tmp_path / "w2vbert.pt", arch="300m", family="w2vbert", encoder=overrides
    )
    feats = Fairseq2Features(model, 2)
    assert feats.fbank and feats.frame_rate == 50.0
    wavs, x, lens = batch([16000, 12345, 8000])
    out = feats(x, lens)
    assert [f.shape for f in out] == [(int(n), 32) for n in feats.num_frames(lens)]
    for w, f in zip(wavs, out, strict=True):  # padded batch == one at a time
        torch.testing.assert_close(
            feats(w[None], torch.tensor([len(w)]))[0], f, atol=1e-5, rtol=1e-5
        )
    km = KMeans.fit(torch.cat(out), 6, seed=0)
    km.save(tmp_path / "c.safetensors")
    tok = local_checkpoint_tokenizer(ckpt, tmp_path)
    units = tok.encode([w.numpy() for w in wavs])
    direct = [torch.unique_consecutive(km.assign(f)) for f in out]
    assert all(
        torch.equal(a, b) for a, b in zip(units.ids, direct, strict=True)
    )  # reloaded from the checkpoint: same units
