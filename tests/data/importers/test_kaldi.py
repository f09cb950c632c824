"""A Kaldi data dir with segments (two utterances per recording) -> prepare -> tokenize."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from importer_helpers import reasons

from tokunify.data.store import TokenStore


def test_kaldi_data_dir_with_segments(clips, roundtrip, tmp_path):
    wavs = tmp_path / "wav"
    wavs.mkdir()
    sr = clips[0].sr
    scp, text, utt2spk, segments = [], [], [], []
    for r, (a, b) in enumerate([(clips[0], clips[1]), (clips[2], clips[3])]):
        rec = f"rec{r}"
        sf.write(wavs / f"{rec}.wav", np.concatenate([a.audio, b.audio]), sr, subtype="PCM_24")
        scp.append(f"{rec} {wavs / rec}.wav")
        t0, t1 = len(a.audio) / sr, (len(a.audio) + len(b.audio)) / sr
        for k, (c, s, e) in enumerate([(a, 0.0, t0), (b, t0, t1)]):
            utt = f"spk{r}-{rec}-{k}"
            segments.append(f"{utt} {rec} {s:.3f} {e:.3f}")
            text.append(f"{utt} {c.text}")
            utt2spk.append(f"{utt} spk{r}")
    scp.append("rec9 sox in.flac -t wav - |")  # piped: refused
    segments.append("spk9-rec9-0 rec9 0.0 1.0")
    text.append("spk9-rec9-0 never read")
    text.append("spk0-missing-0 no segment line")
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    for name, lines in (
        ("wav.scp", scp),
        ("text", text),
        ("utt2spk", utt2spk),
        ("segments", segments),
    ):
        (d / name).write_text("\n".join(lines) + "\n")
    got = roundtrip(d)
    assert "kaldi (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == [
        "spk0-rec0-0",
        "spk0-rec0-1",
        "spk1-rec1-0",
        "spk1-rec1-1",
    ]
    assert [r["speaker"] for r in got.rows] == ["spk0", "spk0", "spk1", "spk1"]
    assert got.rows[1]["start"] == round(len(clips[0].audio) / sr, 3)
    assert got.rows[1]["end"] > got.rows[1]["start"]
    why = reasons(got.rejects)
    assert len(got.rejects) == 2
    assert "wav.scp:3: recording rec9: piped wav.scp command is not supported" in why
    assert "text:6: spk0-missing-0 has no line in segments" in why
    store = TokenStore(got.store)
    rec = next(store[i] for i in range(len(store)) if store[i].id == "spk0-rec0-1")
    assert rec.start == got.rows[1]["start"] and rec.speaker == "spk0"
    assert abs(rec.seconds - len(clips[1].audio) / sr) < 0.01  # the span, not the recording


def test_kaldi_without_segments(clips, roundtrip, tmp_path):
    d = tmp_path / "kaldi"
    clips[0].write(d / "wav" / "u0.wav")
    clips[1].write(d / "wav" / "u1.wav")
    (d / "wav.scp").write_text("u0 wav/u0.wav\nu1 wav/u1.wav\nu2 wav/gone.wav\n")
    (d / "text").write_text(f"u0 {clips[0].text}\nu1 {clips[1].text}\nu2 lost\n")
    got = roundtrip(d)
    assert [r["id"] for r in got.rows] == ["u0", "u1"]
    assert "start" not in got.rows[0] and "speaker" not in got.rows[0]
    assert "wav.scp:3: audio file not found" in reasons(got.rejects)
