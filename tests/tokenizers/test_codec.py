from __future__ import annotations

import numpy as np
import pytest
import torch

from tokunify.tokenizers.base import tokenizer_from_config
from tokunify.tokenizers.codec import EncodecTokenizer, TokenizerConfigError, load_hf_encodec

SR = 8000


@pytest.fixture(scope="module")
def tiny_encodec_dir(tmp_path_factory):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    cfg = EncodecConfig(
        sampling_rate=SR, num_filters=4, upsampling_ratios=[4, 4], hidden_size=16, codebook_size=1024,
        codebook_dim=16, num_residual_layers=1, target_bandwidths=[5.0, 10.0],
    )  # fmt: skip
    model = EncodecModel(cfg)
    with torch.no_grad():  # codebooks drawn from real encoder outputs, so codes vary
        emb = model.encoder(torch.randn(1, 1, 4000) * 0.1)[0].T  # [T, D]
        for q, layer in enumerate(model.quantizer.layers):
            idx = torch.randint(0, emb.shape[0], (layer.codebook.embed.shape[0],))
            layer.codebook.embed.copy_(emb[idx] * 0.5**q + 0.01 * torch.randn_like(emb[idx]))
    out = tmp_path_factory.mktemp("encodec")
    model.save_pretrained(out)
    return out


def noise(n, seed):
    return np.random.default_rng(seed).normal(scale=0.1, size=n).astype(np.float32)


def test_encode_shapes_batch_and_decode(tiny_encodec_dir):
    tok = tokenizer_from_config(
        {"kind": "encodec", "source": str(tiny_encodec_dir), "bandwidth": 10.0}
    )
    assert tok.frame_rate == SR / 16 and tok.cardinality == 1024
    wavs = [noise(n, i) for i, n in enumerate((800, 1333, 400))]
    out = tok.encode(wavs)
    assert [tuple(c.shape) for c in out.ids] == [
        (tok.num_codebooks, -(-n // 16)) for n in (800, 1333, 400)
    ]
    for i, w in enumerate(wavs):
        assert torch.equal(tok.encode([w]).ids[0], out.ids[i])
    assert len({int(c) for c in out.ids[1][0]}) > 3
    audio = tok.decode(out.ids)
    assert [a.shape[0] for a in audio] == [c.shape[1] * 16 for c in out.ids]
    low = tokenizer_from_config(
        {"kind": "encodec", "source": str(tiny_encodec_dir), "bandwidth": 5.0}
    )
    assert low.num_codebooks < tok.num_codebooks
    assert torch.equal(
        low.encode(wavs).ids[0], out.ids[0][: low.num_codebooks]
    )  # residual VQ prefix
    assert tok.to_config()["num_codebooks"] == tok.num_codebooks


def test_config_errors(tiny_encodec_dir, tmp_path):
    with pytest.raises(TokenizerConfigError, match="bandwidth 3.0"):
        tokenizer_from_config(
            {"kind": "encodec", "source": str(tiny_encodec_dir), "bandwidth": 3.0}
        )
    with pytest.raises(TokenizerConfigError, match="unknown encodec backend"):
        tokenizer_from_config(
            {"kind": "encodec", "source": str(tiny_encodec_dir), "backend": "dac"}
        )
    bad = tmp_path / "x.th"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(TokenizerConfigError, match="not an original EnCodec state dict"):
        load_hf_encodec(str(bad))


@pytest.mark.parametrize("arch", ["encodec_model_24khz", "encodec_model_48khz"])
def test_package_and_transformers_agree(arch, tmp_path):
    """The `encodec` package and transformers give the same codes for the same (converted) weights."""
    encodec = pytest.importorskip("encodec")
    torch.manual_seed(0)
    pkg = getattr(encodec.EncodecModel, arch)(pretrained=False)
    for layer in pkg.quantizer.vq.layers:
        layer._codebook.embed.normal_()
        layer._codebook.inited.fill_(1)
    ckpt = tmp_path / f"{arch}.th"
    torch.save(pkg.state_dict(), ckpt)  # the original checkpoint format
    a = tokenizer_from_config(
        {"kind": "encodec", "backend": "encodec", "source": str(ckpt), "bandwidth": 6.0}
    )
    b = tokenizer_from_config(
        {"kind": "encodec", "backend": "transformers", "source": str(ckpt), "bandwidth": 6.0}
    )
    wavs = [noise(n, i) for i, n in enumerate((a.sample_rate // 2, a.sample_rate + 3000))]
    ca, cb = a.encode(wavs).ids, b.encode(wavs).ids
    assert all(torch.equal(x, y) for x, y in zip(ca, cb, strict=True))
    pkg.set_target_bandwidth(6.0)
    with torch.no_grad():
        for w, codes in zip(wavs, ca, strict=True):
            x = torch.from_numpy(w)[None, None].expand(-1, pkg.channels, -1)
            ref = torch.cat([frame[0][0] for frame in pkg.encode(x)], dim=-1)
            assert torch.equal(codes, ref)
    wa, wb = a.decode(ca), b.decode(cb)
    for x, y in zip(wa, wb, strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-3)
    assert isinstance(a, EncodecTokenizer)
