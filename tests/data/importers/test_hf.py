"""HF datasets: audiofolder, save_to_disk, Parquet with embedded audio, HF-style JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from importer_helpers import reasons


def _audiofolder(clips, root):
    lines = ["file_name,transcription,speaker_id"]
    for i, c in enumerate(clips[:3]):
        c.write(root / "data" / f"u{i}.wav", subtype="PCM_24")
        lines.append(f"data/u{i}.wav,{c.text},s{i % 2}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")


def test_audiofolder(clips, roundtrip, tmp_path):
    """Read row by row, without `datasets` (its audiofolder loader needs torchcodec)."""
    src = tmp_path / "af"
    _audiofolder(clips, src)
    got = roundtrip(src)
    assert "hf (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["u0", "u1", "u2"]
    assert [r["speaker"] for r in got.rows] == ["s0", "s1", "s0"]
    assert [r["text"] for r in got.rows] == [c.text for c in clips[:3]]


def _dataset(datasets, clips, tmp_path, embed: bool):
    paths = [str(c.write(tmp_path / "raw" / f"clip{i}.flac", sr=44100, stereo=True))
             for i, c in enumerate(clips[:3])]  # fmt: skip
    ds = datasets.Dataset.from_dict(
        {"audio": paths, "sentence": [c.text for c in clips[:3]], "client_id": ["a", "b", "a"]}
    ).cast_column("audio", datasets.Audio(decode=False))
    if embed:  # the bytes travel in the dataset, the files are gone
        ds = ds.map(lambda r: {"audio": {"path": r["audio"]["path"].rsplit("/", 1)[-1],
                                         "bytes": Path(r["audio"]["path"]).read_bytes()}})  # fmt: skip
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds


def test_save_to_disk(clips, roundtrip, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    _dataset(datasets, clips, tmp_path, embed=False).save_to_disk(str(tmp_path / "saved"))
    got = roundtrip(tmp_path / "saved")
    assert "hf (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["clip0", "clip1", "clip2"]
    assert [r["speaker"] for r in got.rows] == ["a", "b", "a"]


def test_parquet_with_embedded_audio(clips, roundtrip, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = _dataset(datasets, clips, tmp_path, embed=True)
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    for p in (tmp_path / "raw").iterdir():
        p.unlink()
    got = roundtrip(tmp_path / "pq")
    assert "hf (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["clip0", "clip1", "clip2"]
    # the embedded bytes were written beside the manifest
    assert all(r["audio"].startswith("m.audio/") for r in got.rows)


def test_hf_style_jsonl(clips, roundtrip, tmp_path):
    clips[0].write(tmp_path / "a.wav")
    clips[1].write(tmp_path / "b.mp3")
    rows = [{"path": "a.wav", "sentence": clips[0].text}, {"path": "b.mp3", "sentence": clips[1].text},
            {"path": "c.wav", "sentence": "no audio"}, {"path": "a.wav"}]  # fmt: skip
    m = tmp_path / "train.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = roundtrip(m)
    assert "hf (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["a", "b"]
    why = reasons(got.rejects)
    assert "train.jsonl:3: audio file not found" in why
    assert "train.jsonl:4: no transcript column" in why
