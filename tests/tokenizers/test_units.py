from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
import yaml
from transformers import AutoModel

from tokunify.cli import main
from tokunify.data.audio import AudioError
from tokunify.data.manifest import read_manifest
from tokunify.tokenizers.base import dedup, tokenizer_from_config
from tokunify.tokenizers.features import MelConfig, MelFeatures, SSLFeatures
from tokunify.tokenizers.kmeans import KMeans
from tokunify.tokenizers.units import UnitTokenizer

K = 24


def speech(manifest, n=6, sr=16000):
    out = []
    for e in list(read_manifest(manifest))[:n]:
        wav, file_sr = sf.read(e.audio, dtype="float32")
        out.append(soxr.resample(wav, file_sr, sr).astype(np.float32))
    return out


def padded(wavs):
    lens = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lens


def test_ssl_layer_features_match_hidden_states(ssl_dir, speech_manifest):
    model = AutoModel.from_pretrained(ssl_dir).eval()
    wav = torch.from_numpy(speech(speech_manifest, 1)[0])[None]
    with torch.no_grad():
        full = model(wav, output_hidden_states=True)
    n = model.config.num_hidden_layers
    for layer in range(n + 1):
        feats = SSLFeatures.from_pretrained(str(ssl_dir), layer)
        assert len(feats.model.encoder.layers) == layer  # only the layers needed run
        got = feats(wav, torch.tensor([wav.shape[1]]))[0]
        # layer n is the encoder output (last_hidden_state): for pre-LN encoders transformers 5
        # leaves the final LayerNorm out of hidden_states[-1], transformers 4 puts it in.
        want = full.last_hidden_state[0] if layer == n else full.hidden_states[layer][0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def fitted_tokenizer(features, wavs, k=K, dedup_units=True):
    batch, lens = padded(wavs)
    x = torch.cat(features(batch, lens))
    return UnitTokenizer(features, KMeans.fit(x, k, seed=0), dedup=dedup_units)


def test_batch_equals_single_ssl(ssl_dir, speech_manifest):
    assert_batch_equals_single(
        SSLFeatures.from_pretrained(str(ssl_dir), 2), speech(speech_manifest, 6)
    )


@pytest.mark.parametrize("kind,splice", [("mfcc", 0), ("logmel", 0), ("mfcc", 3)])
def test_batch_equals_single_mel(kind, splice, speech_manifest):
    feats = MelFeatures(MelConfig(kind=kind, deltas=not splice, splice=splice))
    assert feats.dim == (20 if kind == "mfcc" else 40) * (7 if splice else 3)
    assert_batch_equals_single(feats, speech(speech_manifest, 6))


def assert_batch_equals_single(feats, wavs):
    """A padded batch gives the features and units of one utterance at a time.

    Features must agree to float precision (padding and masking are right). Units must be equal
    except on exact near-ties: a frame whose two nearest centroids are within 1e-4 (relative) of
    each other may flip under float-level differences between kernels (seen once in ~20 runs on a
    random tiny wav2vec2 with torch 2.9); any other difference fails.
    """
    tok = fitted_tokenizer(feats, wavs)
    batch = tok.encode(wavs)
    assert batch.durations is not None
    x, lens = padded(wavs)
    batch_feats = feats(x, lens)
    for i, w in enumerate(wavs):
        single = feats(torch.from_numpy(w)[None], torch.tensor([len(w)]))[0]
        torch.testing.assert_close(batch_feats[i], single, atol=1e-4, rtol=1e-4)
        a, b = tok.kmeans.assign(batch_feats[i]), tok.kmeans.assign(single)
        diff = torch.nonzero(a != b).flatten()
        d = torch.cdist(single.double(), tok.kmeans.centroids.double()).sort(1).values  # [T, K]
        gap = (d[:, 1] - d[:, 0]) / d[:, 0].clamp(min=1e-12)
        assert bool((gap[diff] < 1e-4).all()), (i, diff.tolist(), gap[diff].tolist())
        if not len(diff):
            one = tok.encode([w])
            assert torch.equal(one.ids[0], batch.ids[i]) and torch.equal(
                one.durations[0], batch.durations[i]
            ), i
        assert int(batch.durations[i].sum()) == int(feats.num_frames(torch.tensor([len(w)]))[0])
        assert bool((batch.ids[i][1:] != batch.ids[i][:-1]).all())  # deduplicated
        assert int(batch.ids[i].min()) >= 0 and int(batch.ids[i].max()) < K


def test_any_rate_and_channels_are_converted(speech_manifest):
    e = next(read_manifest(speech_manifest))
    wav, sr = sf.read(e.audio, dtype="float32")
    assert sr == 22050
    tok = fitted_tokenizer(MelFeatures(), speech(speech_manifest, 3))
    stereo = np.stack([wav, wav])
    a = tok.encode([stereo], sample_rate=sr).ids[0]
    b = tok.encode([soxr.resample(wav, sr, 16000).astype(np.float32)]).ids[0]
    assert torch.equal(a, b)
    assert torch.equal(tok.encode_files([e.audio]).ids[0], b)


def test_bad_inputs_name_the_input(tmp_path, speech_manifest):
    tok = fitted_tokenizer(MelFeatures(), speech(speech_manifest, 2))
    with pytest.raises(AudioError, match="clip.wav: empty audio"):
        tok.encode([np.zeros(0, np.float32)], names=["clip.wav"])
    with pytest.raises(AudioError, match="input 0: 100 samples is shorter than one frame"):
        tok.encode([np.zeros(100, np.float32)])
    bad = np.ones(16000, np.float32)
    bad[5] = np.nan
    with pytest.raises(AudioError, match="NaN or inf"):
        tok.encode([bad])
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not audio")
    with pytest.raises(AudioError, match="junk.wav: unreadable"):
        tok.encode_files([junk])
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        tok.encode_files([tmp_path / "missing.wav"])


def test_config_round_trip(hubert_dir, speech_manifest, tmp_path):
    wavs = speech(speech_manifest, 3)
    for feats in (
        SSLFeatures.from_pretrained(str(hubert_dir), 2),
        MelFeatures(MelConfig(kind="logmel", deltas=False)),
    ):
        tok = fitted_tokenizer(feats, wavs)
        tok.kmeans.save(tmp_path / "c.safetensors")
        tok.centroids_path = "c.safetensors"
        cfg = tok.to_config()
        assert cfg["cardinality"] == K and cfg["kind"] in ("ssl_units", "mel_units")
        back = tokenizer_from_config(json.loads(json.dumps(cfg)), base_dir=tmp_path)
        assert all(
            torch.equal(a, b)
            for a, b in zip(back.encode(wavs).ids, tok.encode(wavs).ids, strict=True)
        )
    with pytest.raises(ValueError, match="unknown speech tokenizer kind"):
        tokenizer_from_config({"kind": "whisper"})


def test_dedup():
    u, d = dedup(torch.tensor([5, 5, 2, 5, 5, 5]))
    assert u.tolist() == [5, 2, 5] and d.tolist() == [2, 1, 3]


def test_train_kmeans_and_encode_audio_cli(speech_manifest, tmp_path, capsys):
    cfg = tmp_path / "mel.yaml"
    cfg.write_text(
        yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc", "n_mfcc": 13}})
    )
    # one broken row: the job logs it and carries on
    broken = tmp_path / "manifest.jsonl"
    rows = speech_manifest.read_text().splitlines()
    rows = [
        json.dumps({**json.loads(r), "audio": str(speech_manifest.parent / json.loads(r)["audio"])})
        for r in rows
    ]
    rows.append(json.dumps({"id": "gone", "audio": str(tmp_path / "gone.wav"), "text": "x"}))
    broken.write_text("\n".join(rows) + "\n")
    out = tmp_path / "km"
    assert (
        main(["train-kmeans", str(broken), "--tokenizer", str(cfg), "--k", "16", "--out", str(out)])
        == 0
    )
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["gone"] and "file not found" in rejects[0]["reason"]
    full = yaml.safe_load((out / "tokenizer.yaml").read_text())
    assert full["cardinality"] == 16 and full["centroids"] == "centroids.safetensors"
    capsys.readouterr()
    wav = next(read_manifest(speech_manifest)).audio
    assert main(["encode-audio", str(wav), "--tokenizer", str(out / "tokenizer.yaml")]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert len(row["ids"]) == len(row["durations"]) > 3 and max(row["ids"]) < 16


def test_train_kmeans_with_lda_on_phone_alignments(speech_manifest, tmp_path, capsys):
    """--lda-dim fits LDA on the manifest's phone spans; the projection travels in the centroids
    file and the tokenizer applies it; rows without the label field are refused by name."""
    cfg = tmp_path / "mel.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "kind": "mel_units",
                "features": {"kind": "mfcc", "n_mfcc": 13, "deltas": False, "splice": 2},
            }
        )
    )
    out = tmp_path / "km"
    argv = [
        "train-kmeans",
        str(speech_manifest),
        "--tokenizer",
        str(cfg),
        "--k",
        "16",
        "--out",
        str(out),
    ]
    assert main([*argv, "--lda-dim", "8"]) == 0
    assert "LDA 65->8" in capsys.readouterr().out
    km = KMeans.load(out / "centroids.safetensors")
    assert km.projection is not None and km.dim == 65 and km.centroids.shape == (16, 8)
    tok = tokenizer_from_config(yaml.safe_load((out / "tokenizer.yaml").read_text()), base_dir=out)
    res = tok.encode(speech(speech_manifest, 2))
    assert all(len(u) > 3 and int(u.max()) < 16 for u in res.ids)
    assert main([*argv, "--lda-dim", "8", "--lda-labels", "words_x", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert str(speech_manifest) in err and "'words_x' field" in err
