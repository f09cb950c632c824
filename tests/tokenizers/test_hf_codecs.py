"""Mimi and DAC through transformers, on tiny random models saved by the tests (tests/tokenizers/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from conftest import CODEC_SR

from tokunify.tokenizers.base import pad_batch, stream_kind_of, tokenizer_from_config
from tokunify.tokenizers.hf_codecs import DacTokenizer, MimiTokenizer, TokenizerConfigError

LENGTHS = (4000, 2500, 1234, 2500)  # samples at 16 kHz; two equal lengths for DAC's exact groups
HOP = {"mimi": 320, "dac": 160}
N_Q = 3


def waves(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(LENGTHS)) / CODEC_SR
    return [
        (0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t[:n]) + 0.05 * rng.standard_normal(n)).astype(
            np.float32
        )
        for i, n in enumerate(LENGTHS)
    ]


@pytest.fixture(scope="module", params=["mimi", "dac"])
def codec(request, mimi_dir, dac_dir):
    src = {"mimi": mimi_dir, "dac": dac_dir}[request.param]
    return request.param, tokenizer_from_config(
        {"kind": request.param, "source": str(src), "num_codebooks": N_Q}
    )


def test_encode_rates_shapes_and_the_transformers_reference(codec):
    kind, tok = codec
    assert isinstance(tok, {"mimi": MimiTokenizer, "dac": DacTokenizer}[kind])
    assert stream_kind_of({"kind": kind}) == "codec" and tok.self_decoding
    assert (tok.sample_rate, tok.frame_rate) == (CODEC_SR, CODEC_SR / HOP[kind])
    assert (tok.cardinality, tok.num_codebooks) == (32, N_Q)
    wavs = waves()
    ids = tok.encode(wavs).ids
    for w, c in zip(wavs, ids, strict=True):
        assert c.shape == (N_Q, math.ceil(len(w) / HOP[kind])) and c.dtype == torch.long
        assert int(c.min()) >= 0 and int(c.max()) < 32
    assert len(torch.cat([c.flatten() for c in ids]).unique()) > 4  # random codebooks: codes vary
    # reference: the transformers model called directly on one utterance padded to whole frames
    model = tok.model
    for w, c in zip(wavs, ids, strict=True):
        x = torch.zeros(1, 1, c.shape[1] * HOP[kind])
        x[0, 0, : len(w)] = torch.from_numpy(w)
        with torch.inference_mode():
            ref = (
                model.encode(x, num_quantizers=N_Q)
                if kind == "mimi"
                else model.encode(x, n_quantizers=N_Q)
            ).audio_codes[0]
        assert torch.equal(c, ref)


def test_padded_batch_equals_one_at_a_time(codec):
    kind, tok = codec
    wavs = waves(1)
    tok.micro_batch_samples = None  # one forward for the whole batch where the codec allows it
    batched = tok.encode_batch(*pad_batch(wavs)).ids
    single = [tok.encode_batch(*pad_batch([w])).ids[0] for w in wavs]
    assert all(torch.equal(a, b) for a, b in zip(batched, single, strict=True))
    groups = tok._groups([math.ceil(n / HOP[kind]) * HOP[kind] for n in LENGTHS])
    # Mimi (causal) pads into one batch; DAC (non-causal) groups only equal lengths
    assert len(groups) == (1 if kind == "mimi" else 3)


def test_dac_padded_batches_differ_only_at_the_end(dac_dir):
    """``batch_padded`` trades exactness for speed: right padding reaches back a few frames only."""
    tok = tokenizer_from_config(
        {"kind": "dac", "source": str(dac_dir), "num_codebooks": N_Q, "batch_padded": True}
    )
    tok.micro_batch_samples = None
    wavs = waves(2)
    batched = tok.encode_batch(*pad_batch(wavs)).ids
    single = [tok.encode_batch(*pad_batch([w])).ids[0] for w in wavs]
    differs = []
    for a, b in zip(batched, single, strict=True):
        bad = (a != b).any(0).nonzero().flatten()
        differs.append(int(a.shape[1] - bad.min()) if len(bad) else 0)
    assert max(differs) <= 8  # right padding may change the last frames only
    assert tok.to_config()["batch_padded"] is True


def test_decode_all_and_first_codebooks_and_round_trip(codec, tmp_path):
    kind, tok = codec
    ids = tok.encode(waves()).ids
    wavs = tok.decode(ids)
    assert [len(w) for w in wavs] == [c.shape[1] * HOP[kind] for c in ids]
    assert all(torch.isfinite(w).all() and w.abs().max() > 0 for w in wavs)
    ref = tok.decode(ids[:1])[0]
    assert torch.allclose(wavs[0], ref, atol=1e-5)  # batched decode = alone
    first = tok.decode([c[:1] for c in ids])  # the `first` layout keeps codebook 0 only
    assert [len(w) for w in first] == [len(w) for w in wavs]
    assert not torch.allclose(first[0], wavs[0])
    with pytest.raises(TokenizerConfigError, match="codes must be"):
        tok.decode([torch.zeros(N_Q + 1, 5, dtype=torch.long)])
    with pytest.raises(TokenizerConfigError, match="must lie in"):
        tok.decode([torch.full((N_Q, 5), 32)])
    # the config records rates and reloads (JSON/YAML round trip) to the same codes
    cfg = tok.to_config()
    assert cfg["sample_rate"] == CODEC_SR and cfg["frame_rate"] == CODEC_SR / HOP[kind]
    assert (cfg["num_codebooks"], cfg["cardinality"]) == (N_Q, 32)
    back = tokenizer_from_config(yaml.safe_load(yaml.safe_dump(cfg)))
    assert all(torch.equal(a, b) for a, b in zip(back.encode(waves()).ids, ids, strict=True))


def test_config_errors(mimi_dir, dac_dir, tmp_path):
    with pytest.raises(TokenizerConfigError, match=r"num_codebooks 5 must lie in \[1, 4\]"):
        tokenizer_from_config({"kind": "mimi", "source": str(mimi_dir), "num_codebooks": 5})
    with pytest.raises(TokenizerConfigError, match=r"num_codebooks 0 must lie in \[1, 4\]"):
        tokenizer_from_config({"kind": "dac", "source": str(dac_dir), "num_codebooks": 0})
    with pytest.raises(TokenizerConfigError, match="needs 'source'"):
        tokenizer_from_config({"kind": "dac"})
    with pytest.raises(TokenizerConfigError, match=r"unknown field\(s\) \['bandwidth'\]"):
        tokenizer_from_config({"kind": "mimi", "source": str(mimi_dir), "bandwidth": 6.0})
    with pytest.raises(TokenizerConfigError, match="the model has sample_rate 16000"):
        tokenizer_from_config({"kind": "dac", "source": str(dac_dir), "sample_rate": 24000})
    with pytest.raises(TokenizerConfigError, match="cannot load a MimiModel"):
        tokenizer_from_config({"kind": "mimi", "source": str(tmp_path)})
    with pytest.raises(TokenizerConfigError, match="dtype"):
        tokenizer_from_config({"kind": "mimi", "source": str(mimi_dir), "dtype": "int8"})
    # defaults: Moshi's 8 Mimi codebooks, capped by this tiny model's 4; all of DAC's
    assert tokenizer_from_config({"kind": "mimi", "source": str(mimi_dir)}).num_codebooks == 4
    assert tokenizer_from_config({"kind": "dac", "source": str(dac_dir)}).num_codebooks == 4
    # a source relative to the config's dir is recorded absolute (stores/bundles live elsewhere)
    rel = tokenizer_from_config({"kind": "dac", "source": dac_dir.name}, base_dir=dac_dir.parent)
    assert rel.to_config()["source"] == str(dac_dir.resolve())


@pytest.fixture(scope="module")
def codec_stores(mimi_dir, dac_dir, speech_manifest, sp_dir, tmp_path_factory):
    """kind -> (tokenizer config, store), tokenized once per codec for the end-to-end cases."""
    from tokunify.cli import main

    out = {}
    for kind, src in (("mimi", mimi_dir), ("dac", dac_dir)):
        root = tmp_path_factory.mktemp(f"{kind}-store")
        cfg = root / f"{kind}.yaml"
        cfg.write_text(yaml.safe_dump({"kind": kind, "source": str(src), "num_codebooks": 2}))
        args = ["tokenize", str(speech_manifest), "--out", str(root / "store")]
        args += ["--tokenizer", str(cfg), "--text-tokenizer", str(sp_dir), "--no-progress"]
        assert main(args) == 0
        out[kind] = cfg, root / "store"
    return out


@pytest.mark.parametrize(
    ("kind", "layout"), [("mimi", "first"), ("dac", "flatten"), ("mimi", "delay")]
)
def test_tokenize_train_generate_decode(kind, layout, codec_stores, sp_dir, tmp_path):
    """A codec stream end to end: tokenize -> extend (stream from the tokenizer) -> train -> generate
    -> decode through the bundle's vocoder path (the codec's own decoder)."""
    from helpers import write_config

    import tokunify
    from tokunify.cli import main
    from tokunify.core.config import from_dict
    from tokunify.data.store import TokenStore
    from tokunify.generate.generator import Generator
    from tokunify.train.config import TrainConfig
    from tokunify.train.loop import run_train
    from tokunify.vocoder.codec import CodecVocoder

    cfg, store = codec_stores[kind]
    info = TokenStore(store).meta.streams["codec"]  # named by the registry's stream kind
    assert (info.kind, info.num_codebooks, info.cardinality) == ("codec", 2, 32)
    assert info.frame_rate == CODEC_SR / HOP[kind] and info.tokenizer["sample_rate"] == CODEC_SR
    bundle = tmp_path / "bundle"
    args = ["extend", "scratch:llama-tiny", "--text-tokenizer", str(sp_dir), "--out", str(bundle)]
    assert main([*args, "--speech-tokenizer", f"codec={cfg}", "--codec-layout", layout]) == 0
    spec = tokunify.load(bundle, with_model=False).vocab.stream("codec")
    assert (spec.kind, spec.codebooks, spec.size, spec.layout) == ("codec", 2, 32, layout)
    run = tmp_path / "run"
    train_cfg = write_config(tmp_path / "train.yaml", bundle, store, run, steps=3, save_every=3)
    train = yaml.safe_load(train_cfg.read_text())
    train["data"].update(seq_len=512, mixture={"tts": 0.5, "asr": 0.3, "continue": 0.2})
    run_train(from_dict(TrainConfig, train))

    gen = Generator(run / "final")
    assert isinstance(gen.vocoder, CodecVocoder) and gen.sample_rate == CODEC_SR
    codes = TokenStore(store)[0].streams["codec"]  # [2, T]
    kept = codes[:1] if layout == "first" else codes  # `first` models codebook 0 only
    wav = gen.decode([kept])[0]
    assert len(wav) == codes.shape[1] * HOP[kind] and np.abs(wav).max() > 0
    want = gen.speech_tokenizer.decode([torch.from_numpy(np.asarray(kept, dtype=np.int64))])[0]
    assert np.allclose(wav, want.numpy(), atol=1e-6)
    # max_new_tokens=24 cuts the codec segment: the layout closes the cut body (delay included)
    r = gen.generate("tts", ["the red cat sat on the mat"], max_new_tokens=24, do_sample=False)[0]
    assert r.units is not None and r.units.shape[0] == (1 if layout == "first" else 2)
    if r.units.shape[-1]:
        assert r.audio is not None and len(r.audio) == r.units.shape[-1] * HOP[kind]
        assert r.sample_rate == CODEC_SR
