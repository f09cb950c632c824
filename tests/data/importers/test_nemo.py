"""A NeMo manifest with offsets and durations -> prepare -> tokenize (and tokenize directly)."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from importer_helpers import reasons


def test_nemo_manifest(clips, roundtrip, tmp_path):
    sr = clips[0].sr
    long = np.concatenate([clips[0].audio, clips[1].audio])
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "long.wav", long, sr)
    clips[2].write(tmp_path / "audio" / "c.flac")
    d0 = len(clips[0].audio) / sr
    rows = [
        {
            "audio_filepath": "audio/long.wav",
            "offset": 0.0,
            "duration": d0,
            "text": clips[0].text,
            "speaker": 7,
        },
        {
            "audio_filepath": "audio/long.wav",
            "offset": d0,
            "duration": len(clips[1].audio) / sr,
            "text": clips[1].text,
        },
        {
            "audio_filepath": str(tmp_path / "audio" / "c.flac"),
            "duration": 1.23,
            "text": clips[2].text,
        },
        {"audio_filepath": "audio/missing.wav", "duration": 1.0, "text": "gone"},
    ]
    m = tmp_path / "train_manifest.json"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"audio_filepath": 3\n')
    got = roundtrip(m)
    assert "nemo (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["long-00000000", f"long-{round(d0 * 1000):08d}", "c"]
    assert got.rows[0]["speaker"] == "7" and got.rows[0]["end"] == d0
    assert got.rows[1]["start"] == d0
    assert got.rows[2]["duration"] == 1.23 and "start" not in got.rows[2]
    why = reasons(got.rejects)
    assert len(got.rejects) == 2
    assert "train_manifest.json:4: audio file not found" in why
    assert "train_manifest.json:5: malformed NeMo row" in why
