"""Shared set-up for benchmarks: an espeak corpus, mel units and a token store, built in a temp dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "red",
    "birds",
    "sing",
    "in",
    "the",
    "old",
    "green",
    "tree",
    "and",
    "we",
]
VOICES = ["en-us", "en+f2", "en-us+m3"]


def speech(
    n: int, sample_rate: int, voices: list[str] | None = None, max_words: int = 14
) -> list[np.ndarray]:
    """``n`` espeak utterances of 6..max_words words, resampled to ``sample_rate``."""
    import soxr

    from tokunify.data.corpus.espeak import Espeak

    engine, rng, voices = Espeak(), np.random.default_rng(0), voices or VOICES
    out = []
    for i in range(n):
        s = engine.synthesize(
            " ".join(rng.choice(WORDS, size=int(rng.integers(6, max_words + 1)))),
            voices[i % len(voices)],
        )
        out.append(soxr.resample(s.audio, s.sample_rate, sample_rate).astype(np.float32))
    return out


def build_store(
    work: Path, n_utts: int = 200, k: int = 100, max_words: int = 30
) -> dict[str, Path]:
    """Synthesize ``n_utts`` sentences (1..max_words words), train k-means, tokenize with text ids."""
    import soundfile as sf
    import yaml

    from tokunify.cli import main
    from tokunify.data.corpus.espeak import Espeak
    from tokunify.data.manifest import Entry, write_manifest
    from tokunify.tokenizers.text import train_sentencepiece

    rng = np.random.default_rng(0)
    engine, entries, texts = Espeak(), [], []
    (work / "wavs").mkdir(parents=True, exist_ok=True)
    for i in range(n_utts):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, max_words + 1))))
        s = engine.synthesize(text, VOICES[i % len(VOICES)])
        p = work / "wavs" / f"w{i}.wav"
        sf.write(p, s.audio, s.sample_rate)
        entries.append(
            Entry(id=f"u{i}", audio=p, text=text, speaker=VOICES[i % len(VOICES)], words=s.words)
        )
        texts.append(text)
    write_manifest(entries, work / "m.jsonl")
    train_sentencepiece(texts, work / "sp", vocab_size=400)
    (work / "mel.yaml").write_text(
        yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc"}})
    )
    main(
        [
            "train-kmeans",
            str(work / "m.jsonl"),
            "--tokenizer",
            str(work / "mel.yaml"),
            "--k",
            str(k),
            "--out",
            str(work / "km"),
            "--overwrite",  # rebuilt with the corpus
        ]
    )
    tok = work / "km" / "tokenizer.yaml"
    main(["tokenize", str(work / "m.jsonl"), "--out", str(work / "store"), "--tokenizer", f"units={tok}",
          "--text-tokenizer", str(work / "sp"), "--no-progress", "--chunk-size", "250"])  # fmt: skip
    return {
        "manifest": work / "m.jsonl",
        "store": work / "store",
        "sp": work / "sp",
        "tokenizer": tok,
    }
