"""Common Voice (validated.tsv + clips/*.mp3) -> prepare -> tokenize."""

from __future__ import annotations

from importer_helpers import reasons


def test_common_voice(clips, roundtrip, tmp_path):
    src = tmp_path / "cv-corpus" / "en"
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes"]
    for i, c in enumerate(clips[:3]):
        c.write(src / "clips" / f"common_voice_en_{i}.mp3", sr=48000)
        lines.append(f"spk{i % 2}\tcommon_voice_en_{i}.mp3\t{c.text}\t2\t0")
    lines.append("spk9\tcommon_voice_en_9.mp3\tmissing clip\t2\t0")
    (src / "validated.tsv").write_text("\n".join(lines) + "\n")
    with (src / "validated.tsv").open("ab") as f:
        f.write(b"spk9\tx.mp3\t\xff\xfe\t1\t0\n")
    got = roundtrip(src)
    assert "commonvoice (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == [f"common_voice_en_{i}" for i in range(3)]
    assert [r["speaker"] for r in got.rows] == ["spk0", "spk1", "spk0"]
    why = reasons(got.rejects)
    assert len(got.rejects) == 2
    assert "validated.tsv:5: audio file not found" in why
    assert "validated.tsv:6: not UTF-8" in why
