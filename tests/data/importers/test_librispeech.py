"""LibriSpeech (FLAC), LibriTTS and MLS trees -> prepare -> tokenize."""

from __future__ import annotations

from importer_helpers import reasons

from tokunify.data.store import TokenStore


def test_librispeech_tree(clips, roundtrip, tmp_path):
    src = tmp_path / "LibriSpeech" / "train-clean-5"
    lines = []
    for i, c in enumerate(clips[:4]):
        spk = "103" if i < 2 else "1240"
        utt = f"{spk}-77-{i:04d}"
        c.write(src / spk / "77" / f"{utt}.flac", sr=16000)
        lines.append((spk, f"{utt} {c.text.upper()}"))
    for spk in ("103", "1240"):
        trans = src / spk / "77" / f"{spk}-77.trans.txt"
        body = "\n".join(x for s, x in lines if s == spk) + "\n"
        trans.write_text(body + (f"{spk}-77-0099 NO AUDIO HERE\n" if spk == "103" else ""))
    clips[4].write(src / "1240" / "77" / "1240-77-0050.flac", sr=16000)  # no transcript line
    with (src / "1240" / "77" / "1240-77.trans.txt").open("ab") as f:
        f.write(b"1240-77-0051 CAF\xe9\n")  # Latin-1, not UTF-8
    got = roundtrip(src)
    assert "librispeech (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == [
        "103-77-0000",
        "103-77-0001",
        "1240-77-0002",
        "1240-77-0003",
    ]
    assert [r["speaker"] for r in got.rows] == ["103", "103", "1240", "1240"]
    assert got.rows[0]["text"] == "THE CAT SAT"
    why = reasons(got.rejects)
    assert len(got.rejects) == 3
    assert "audio file not found for 103-77-0099" in why
    assert "1240-77-0050.flac: no transcript line" in why
    assert "1240-77.trans.txt:3: not UTF-8" in why
    assert TokenStore(got.store)[0].speaker in ("103", "1240")


def test_libritts_tree_lower(clips, roundtrip, tmp_path):
    src = tmp_path / "LibriTTS" / "dev"
    for i, c in enumerate(clips[:3]):
        utt = f"84_121_000{i}_00000{i}"
        c.write(src / "84" / "121" / f"{utt}.wav", sr=24000, subtype="PCM_24")
        (src / "84" / "121" / f"{utt}.normalized.txt").write_text(c.text.title() + ".")
    got = roundtrip(src, "--text-normalize", "lower")
    assert [r["speaker"] for r in got.rows] == ["84"] * 3
    assert got.rows[0]["text"] == "the cat sat."
    assert got.rejects == []


def test_mls_tree(clips, roundtrip, tmp_path):
    src = tmp_path / "mls_english" / "dev"
    lines = []
    for i, c in enumerate(clips[:3]):
        utt = f"10214_10108_{i:06d}"
        c.write(src / "audio" / "10214" / "10108" / f"{utt}.flac", sr=16000)
        lines.append(f"{utt}\t{c.text}")
    (src / "transcripts.txt").write_text("\n".join(lines) + "\n")
    got = roundtrip(src, "--format", "librispeech")
    assert "librispeech (given)" in got.format_line
    assert [r["speaker"] for r in got.rows] == ["10214"] * 3
    assert [r["text"] for r in got.rows] == [c.text for c in clips[:3]]
