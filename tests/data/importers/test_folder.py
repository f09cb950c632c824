"""A folder of audio + .txt/.lab (24-bit WAV, 44.1 kHz stereo, MP3) -> prepare -> tokenize."""

from __future__ import annotations

from importer_helpers import reasons


def test_folder_of_pairs(clips, roundtrip, tmp_path):
    src = tmp_path / "recordings"
    clips[0].write(src / "a.wav", subtype="PCM_24")
    (src / "a.txt").write_text(clips[0].text)
    clips[1].write(src / "sub" / "b.wav", sr=44100, stereo=True)
    (src / "sub" / "b.lab").write_text(clips[1].text + "\n")
    clips[2].write(src / "sub" / "c.mp3", sr=44100)
    (src / "sub" / "c.txt").write_text(clips[2].text)
    clips[3].write(src / "no_text.flac")  # missing transcript
    (src / "orphan.txt").write_text("no audio for this")
    clips[4].write(src / "latin1.wav")
    (src / "latin1.txt").write_bytes(b"caf\xe9")  # bad UTF-8
    got = roundtrip(src)
    assert "folder (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["a", "sub/b", "sub/c"]
    assert [r["text"] for r in got.rows] == [c.text for c in clips[:3]]
    why = reasons(got.rejects)
    assert len(got.rejects) == 3
    assert "no_text.flac: missing transcript" in why
    assert "orphan.txt: transcript without an audio file" in why
    assert "latin1.txt: not UTF-8" in why
