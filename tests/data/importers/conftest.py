"""Fixtures for the importer tests: a few espeak clips, and `prepare` then `tokenize` through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tokunify.cli import main
from tokunify.data.store import TokenStore

TEXTS = ["the cat sat", "a red house", "we saw two dogs", "where are you", "one big tree"]
VOICES = ["en-us", "en-us+m3"]


@dataclass
class Clip:
    text: str
    voice: str
    audio: np.ndarray  # [N] float32
    sr: int

    def write(self, path: Path, sr: int | None = None, stereo: bool = False, **kw) -> Path:
        """Write as ``path`` (format from the suffix), resampled to ``sr``, optionally stereo."""
        wav, rate = self.audio, self.sr
        if sr is not None and sr != rate:
            wav, rate = soxr.resample(wav, rate, sr).astype(np.float32), sr
        if stereo:
            wav = np.stack([wav, 0.5 * wav], axis=1)  # [N, 2]
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav, rate, **kw)
        return path


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    from tokunify.data.corpus.espeak import Espeak

    engine = Espeak()
    out = []
    for i, text in enumerate(TEXTS):
        s = engine.synthesize(text, VOICES[i % 2])
        out.append(Clip(text, VOICES[i % 2], s.audio, s.sample_rate))
    return out


@dataclass
class Prepared:
    format_line: str
    rows: list[dict]
    rejects: list[dict]
    store_ids: list[str]
    store_rejects: list[dict]
    store: Path


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture
def roundtrip(unit_tokenizer, tmp_path, capsys) -> Callable[..., Prepared]:
    """``roundtrip(src, *extra)``: `prepare SRC --out m.jsonl` (auto format unless ``extra`` says),
    then `tokenize m.jsonl`; asserts both exit 0 and every row lands exactly once."""

    def run(src: Path, *extra: str) -> Prepared:
        manifest = tmp_path / "out" / "m.jsonl"
        assert main(["prepare", str(src), "--out", str(manifest), *extra]) == 0
        out = capsys.readouterr().out
        format_line = next(x for x in out.splitlines() if x.startswith("prepare: format"))
        rows = _read_jsonl(manifest)
        rejects = _read_jsonl(tmp_path / "out" / "m.rejects.jsonl")
        store = tmp_path / "out" / "store"
        args = ["tokenize", str(manifest), "--out", str(store), "--tokenizer",
                f"units={unit_tokenizer}", "--chunk-size", "2", "--no-progress"]  # fmt: skip
        assert main(args) == 0
        ids = TokenStore(store).ids()
        store_rejects = [r for f in sorted(store.glob("rejects-*.jsonl")) for r in _read_jsonl(f)]
        assert sorted(ids) == sorted(r["id"] for r in rows)  # every manifest row stored once
        assert len(set(ids)) == len(ids)
        assert store_rejects == []
        return Prepared(format_line, rows, rejects, ids, store_rejects, store)

    return run
