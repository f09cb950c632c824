"""A tiny espeak store and a from-scratch bundle that matches it, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tokunify.cli import main

K = 24


@pytest.fixture(scope="session")
def unit_tokenizer(speech_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-km")
    cfg = out / "mel.yaml"
    cfg.write_text(
        yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc", "n_mfcc": 13}})
    )
    assert (
        main(
            [
                "train-kmeans",
                str(speech_manifest),
                "--tokenizer",
                str(cfg),
                "--k",
                str(K),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "tokenizer.yaml"


@pytest.fixture(scope="session")
def train_store(speech_manifest, unit_tokenizer, sp_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-store") / "store"
    args = [
        "tokenize",
        str(speech_manifest),
        "--out",
        str(out),
        "--tokenizer",
        f"units={unit_tokenizer}",
    ]
    assert main([*args, "--text-tokenizer", str(sp_dir), "--chunk-size", "6", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def train_bundle(unit_tokenizer, sp_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train-bundle") / "bundle"
    args = ["extend", "scratch:llama-tiny", "--text-tokenizer", str(sp_dir), "--units", str(K)]
    assert main([*args, "--speech-tokenizer", f"units={unit_tokenizer}", "--out", str(out)]) == 0
    return out


def write_config(path: Path, bundle: Path, store: Path, out: Path, **over) -> Path:
    cfg = {
        "bundle": str(bundle),
        "out": str(out),
        "steps": 6,
        "batch_size": 2,
        "save_every": 3,
        "eval_every": 3,
        "log_every": 1,
        "progress": False,
        "data": {
            "stores": [str(store)],
            "seq_len": 128,
            "eval_fraction": 0.15,
            "mixture": {
                "asr": 0.3,
                "tts": 0.3,
                "continue": 0.1,
                "text": 0.1,
                "interleave": 0.1,
                "s2s": 0.1,
            },
        },
        "optim": {"lr": 0.003, "warmup_steps": 2},
    }
    for k, v in over.items():
        node = cfg
        *parents, last = k.split(".")
        for p in parents:
            node = node[p]
        node[last] = v
    path.write_text(yaml.safe_dump(cfg))
    return path
