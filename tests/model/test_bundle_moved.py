"""Self-contained bundles: `extend` carries a local speech-tokenizer encoder and its centroids; a
bundle moved elsewhere (originals deleted) works from `/`. Non-empty --out and missing local
paths are one-line errors."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import soundfile as sf
import yaml

from tokunify.data.corpus.espeak import Espeak

CLI = [sys.executable, "-m", "tokunify"]


def tokunify(args: list[str], cwd: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def tiny_hubert(out: Path) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4),
                       conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=2)  # fmt: skip
    HubertModel(cfg).save_pretrained(out)
    return out


def tiny_swuggy(root: Path) -> Path:
    """A ZeroSpeech-2021 lexical/dev directory: two word / non-word pairs, one voice."""
    d = root / "lexical" / "dev"
    d.mkdir(parents=True)
    engine, rows = Espeak(), []
    for i, (word, non) in enumerate([("house", "hobse"), ("green", "greem")]):
        for text, ok in ((word, 1), (non, 0)):
            s = engine.synthesize(text, "en-us")
            sf.write(d / f"{text}.wav", s.audio, s.sample_rate)
            rows.append({"filename": text, "id": f"p{i}", "voice": "en-us", "frequency": 3,
                         "word": text, "phones": "", "length": len(text), "correct": ok})  # fmt: skip
    with open(d / "gold.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_a_moved_bundle_works_from_root(speech_manifest, sp_dir, tmp_path):
    orig = tmp_path / "orig"
    tiny_hubert(orig / "enc")
    (orig / "ssl.yaml").write_text(
        yaml.safe_dump({"kind": "ssl_units", "source": "./enc", "layer": 1})
    )
    # Relative paths as a user writes them, from the directory they work in.
    res = tokunify(["train-kmeans", speech_manifest, "--tokenizer", "ssl.yaml", "--k", "8",
                    "--out", "km", "--max-utterances", "9"], cwd=orig)  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = tokunify(["extend", "scratch:llama-tiny", "--text-tokenizer", sp_dir, "--units", "8",
                    "--speech-tokenizer", "units=km/tokenizer.yaml", "--out", "bundle"], cwd=orig)  # fmt: skip
    assert res.returncode == 0, res.stderr
    spec = yaml.safe_load((orig / "bundle" / "tokunify.json").read_text())
    cfg = spec["speech_tokenizers"]["units"]
    assert cfg["source"] == "speech_tokenizers/units/encoder"
    assert cfg["centroids"] == "speech_tokenizers/units/centroids.safetensors"
    assert (orig / "bundle" / cfg["source"] / "model.safetensors").is_file()
    # The same tokenizer gives the same hash wherever it lies (stores made from the original
    # config stay compatible with the bundle).
    from tokunify.tokenizers.identity import tokenizer_hash

    bare = {k: v for k, v in cfg.items() if k != "hash"}
    assert tokenizer_hash(bare, base_dir=orig / "bundle") == cfg["hash"]

    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(orig / "bundle", moved)
    shutil.rmtree(orig)
    wav = sorted((speech_manifest.parent / "wavs").glob("*.wav"))[0]
    res = tokunify(
        ["generate", moved, "--task", "asr", "--input", wav, "--max-new-tokens", "5"], cwd="/"
    )
    assert res.returncode == 0, res.stderr
    bench = tiny_swuggy(tmp_path / "zr")
    res = tokunify(["eval-slm", moved, "--benchmark", "swuggy", "--data", bench,
                    "--out", tmp_path / "r.json"], cwd="/")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r.json").is_file()


def test_missing_local_paths_say_so(sp_dir, tmp_path):
    (tmp_path / "ssl.yaml").write_text(
        yaml.safe_dump({"kind": "ssl_units", "source": "./no/encoder", "layer": 1})
    )
    cases = [
        (["extend", "scratch:llama-tiny", "--text-tokenizer", sp_dir, "--units", "8",
          "--speech-tokenizer", f"units={tmp_path / 'ssl.yaml'}", "--out", tmp_path / "b"], "./no/encoder"),
        (["extend", "./models/base", "--out", tmp_path / "b"], "./models/base"),
        (["extend", "scratch:llama-tiny", "--text-tokenizer", "runs/x/tok", "--units", "8",
          "--out", tmp_path / "b"], "runs/x/tok"),
    ]  # fmt: skip
    for args, name in cases:
        res = tokunify(args, cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        err = res.stderr.strip().splitlines()
        assert err[-1].startswith(f"tokunify extend: error: {name}: no such directory"), err
        assert "huggingface.co" not in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b").exists()


def test_non_empty_out_is_refused_without_overwrite(sp_dir, speech_manifest, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = [
        "extend",
        "scratch:llama-tiny",
        "--text-tokenizer",
        sp_dir,
        "--units",
        "8",
        "--out",
        out,
    ]
    res = tokunify(args, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"tokunify extend: error: {out}: --out is not empty; pass --overwrite to replace it"
    )
    assert (out / "keep.txt").read_text() == "mine"
    assert tokunify([*args, "--overwrite"], cwd=tmp_path).returncode == 0
    assert (out / "tokunify.json").is_file()
    mel = tmp_path / "mel.yaml"
    mel.write_text(yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc"}}))
    km = ["train-kmeans", speech_manifest, "--tokenizer", mel, "--k", "4", "--out", tmp_path / "km"]
    (tmp_path / "km").mkdir()
    (tmp_path / "km" / "mel.yaml").write_text(mel.read_text())  # its input beside it: fine
    assert tokunify(km, cwd=tmp_path).returncode == 0
    res = tokunify(km, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"tokunify train-kmeans: error: {tmp_path / 'km'}: --out holds an earlier result "
        "(centroids.safetensors, tokenizer.yaml, rejects.jsonl); pass --overwrite to replace it"
    )
    assert tokunify([*km, "--overwrite"], cwd=tmp_path).returncode == 0
