"""lhotse CutSet / RecordingSet + SupervisionSet (.jsonl and .jsonl.gz) -> prepare -> tokenize."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from importer_helpers import reasons

from tokunify.data.store import TokenStore

lhotse = pytest.importorskip("lhotse")


def _sets(clips, tmp_path):
    """Recording r0 holds two utterances (two supervisions), r1 one, r2 a missing file."""
    sr = clips[0].sr
    a, b = clips[0], clips[1]
    sf.write(tmp_path / "r0.wav", np.concatenate([a.audio, b.audio]), sr)
    clips[2].write(tmp_path / "r1.flac")
    recs = [lhotse.Recording.from_file(tmp_path / "r0.wav", recording_id="r0"),
            lhotse.Recording.from_file(tmp_path / "r1.flac", recording_id="r1")]  # fmt: skip
    sf.write(tmp_path / "r2.wav", clips[3].audio, sr)
    recs.append(lhotse.Recording.from_file(tmp_path / "r2.wav", recording_id="r2"))
    (tmp_path / "r2.wav").unlink()
    ta = len(a.audio) / sr
    sups = [
        lhotse.SupervisionSegment("s0", "r0", 0.0, ta, text=a.text, speaker="alice"),
        lhotse.SupervisionSegment(
            "s1",
            "r0",
            ta,
            len(b.audio) / sr,
            text=b.text,
            speaker="bob",
            alignment={"word": [lhotse.supervision.AlignmentItem("a", ta + 0.1, 0.2)]},
        ),
        lhotse.SupervisionSegment(
            "s2", "r1", 0.0, recs[1].duration, text=clips[2].text, speaker="carol"
        ),
        lhotse.SupervisionSegment("s3", "r2", 0.0, recs[2].duration, text="lost", speaker="dan"),
    ]
    return lhotse.RecordingSet.from_recordings(recs), lhotse.SupervisionSet.from_segments(sups), ta


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_recording_and_supervision_sets(clips, roundtrip, tmp_path, suffix):
    recs, sups, ta = _sets(clips, tmp_path)
    recs.to_file(tmp_path / f"x_recordings_train{suffix}")
    sups.to_file(tmp_path / f"x_supervisions_train{suffix}")
    got = roundtrip(tmp_path / f"x_recordings_train{suffix}")
    assert "lhotse (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["s0", "s1", "s2"]
    assert [r["speaker"] for r in got.rows] == ["alice", "bob", "carol"]
    assert got.rows[1]["start"] == pytest.approx(ta) and got.rows[0]["end"] == pytest.approx(ta)
    assert got.rows[1]["words"] == [["a", 0.1, 0.3]]  # relative to the row's start
    assert len(got.rejects) == 1 and "audio file not found" in reasons(got.rejects)
    assert {TokenStore(got.store)[i].speaker for i in range(3)} == {"alice", "bob", "carol"}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_cutset_multi_supervision(clips, roundtrip, tmp_path, suffix):
    recs, sups, ta = _sets(clips, tmp_path)
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups)
    (tmp_path / "corpus").mkdir()
    cuts.to_file(tmp_path / "corpus" / f"cuts{suffix}")
    got = roundtrip(tmp_path / "corpus")  # a folder holding the cuts file
    assert "lhotse (detected)" in got.format_line
    assert [r["id"] for r in got.rows] == ["s0", "s1", "s2"]  # one row per supervision
    assert got.rows[1]["start"] == pytest.approx(ta)
    assert got.rows[1]["words"] == [["a", 0.1, 0.3]]
    assert "cut r2" in reasons(got.rejects) and len(got.rejects) == 1


def test_tokenize_reads_lhotse_sets_directly(clips, unit_tokenizer, tmp_path, capsys):
    """What used to end in a traceback (a RecordingSet) or reject a whole uncompressed cuts file."""
    from tokunify.cli import main
    from tokunify.data.manifest import ManifestError, read_manifest

    recs, sups, _ = _sets(clips, tmp_path)
    recs.to_file(tmp_path / "recordings.jsonl.gz")
    sups.to_file(tmp_path / "supervisions.jsonl.gz")
    lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups).to_file(
        tmp_path / "cuts.jsonl"
    )
    for i, src in enumerate(["recordings.jsonl.gz", "cuts.jsonl"]):
        store = tmp_path / f"store{i}"
        assert main(["tokenize", str(tmp_path / src), "--out", str(store), "--tokenizer",
                     f"units={unit_tokenizer}", "--no-progress"]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert "importing it as lhotse" in out and "tokenized 3 utterances" in out
        assert sorted(TokenStore(store).ids()) == ["s0", "s1", "s2"]
    with pytest.raises(
        ManifestError, match="a lhotse RecordingSet, not a CutSet; `tokunify prepare`"
    ):
        list(read_manifest(tmp_path / "recordings.jsonl.gz"))
