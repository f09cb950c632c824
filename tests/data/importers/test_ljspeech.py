"""LJSpeech (metadata.csv + wavs/) -> prepare -> tokenize."""

from __future__ import annotations

from importer_helpers import reasons


def test_ljspeech(clips, roundtrip, tmp_path):
    src = tmp_path / "LJSpeech-1.1"
    lines = []
    for i, c in enumerate(clips[:3]):
        c.write(src / "wavs" / f"LJ001-{i:04d}.wav")
        lines.append(f"LJ001-{i:04d}|{c.text.upper()}|{c.text.capitalize()}!")
    lines += ["LJ001-0009|no audio|no audio", "LJ001-0000"]
    (src / "metadata.csv").write_text("\n".join(lines) + "\n")
    got = roundtrip(src, "--text-normalize", "whisper")
    assert "ljspeech (detected)" in got.format_line
    assert [r["text"] for r in got.rows] == [c.text for c in clips[:3]]
    why = reasons(got.rejects)
    assert len(got.rejects) == 2
    assert "metadata.csv:4: audio file not found" in why
    assert "metadata.csv:5: missing transcript" in why
