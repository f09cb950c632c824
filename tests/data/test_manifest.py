"""Manifests: JSONL and TSV rows, audio objects and segments, relative paths, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokunify.data.manifest import Entry, ManifestError, read_manifest, write_manifest


def test_jsonl_round_trip_keeps_every_field(tmp_path):
    wav = tmp_path / "wavs" / "a.wav"
    entries = [
        Entry(id="a", audio=wav, start=0.5, end=1.25, text="hi there", speaker="m3",
              words=[("hi", 0.5, 0.7), ("there", 0.75, 1.2)], extra={"s2s_target": "b"}),
        Entry(id="b", audio=Path("/elsewhere/b.wav")),
    ]  # fmt: skip
    p = write_manifest(entries, tmp_path / "m.jsonl")
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert rows[0]["audio"] == "wavs/a.wav" and rows[1]["audio"] == "/elsewhere/b.wav"
    back = list(read_manifest(p))
    assert back[0] == Entry(id="a", audio=wav.absolute(), start=0.5, end=1.25, text="hi there", speaker="m3",
                            words=[("hi", 0.5, 0.7), ("there", 0.75, 1.2)], extra={"s2s_target": "b"})  # fmt: skip
    assert (
        back[1].audio == Path("/elsewhere/b.wav") and back[1].text is None and back[1].extra == {}
    )


def test_audio_object_gives_the_segment(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"id": 7, "audio": {"path": "x.wav", "start": 1, "end": 2.5}}) + "\n\n")
    (e,) = read_manifest(p)
    assert (e.id, e.audio, e.start, e.end) == ("7", tmp_path / "x.wav", 1.0, 2.5)


def test_tsv_with_header_and_json_words(tmp_path):
    p = tmp_path / "m.tsv"
    words = json.dumps([["hi", 0.1, 0.3]])
    p.write_text(f"id\taudio\ttext\tspeaker\tstart\tend\twords\nu1\ta.wav\thi\t\t\t0.4\t{words}\n")
    (e,) = read_manifest(p)
    assert e.text == "hi" and e.speaker is None and e.start is None and e.end == 0.4
    assert e.words == [("hi", 0.1, 0.3)] and e.audio == tmp_path / "a.wav"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"id": "x"}', "needs 'id' and 'audio'"),
        (b'{"id": "x", "audio": {"start": 1}}', "needs a 'path'"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"id": "x", "audio": "a.wav", "start": "soon"}', "malformed row"),
        (b'{"id": "bad\xff", "audio": "a.wav"}', "not UTF-8"),
    ],
)
def test_bad_rows_raise_naming_file_and_line_or_are_reported(tmp_path, line, reason):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"id": "ok", "audio": "a.wav"}\n' + line + b"\n")
    with pytest.raises(ManifestError, match=f"m.jsonl:2: .*{reason}"):
        list(read_manifest(p))
    seen: list[tuple[str, str | None, str]] = []
    kept = list(read_manifest(p, on_error=lambda where, i, why: seen.append((where, i, why))))
    assert [e.id for e in kept] == ["ok"]
    assert len(seen) == 1 and seen[0][0].endswith("m.jsonl:2") and reason in seen[0][2]


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        list(read_manifest(tmp_path / "nope.jsonl"))


def test_not_utf8_row_is_reported_with_an_exact_id_or_none(tmp_path):
    """Bytes that are not UTF-8 are never replaced: the row is reported by line, with its id only
    when the id itself is readable."""
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"id": "latin1", "audio": "a.wav", "text": "caf\xe9"}\n'
                  b'{"id": "bad\xff", "audio": "a.wav"}\n')  # fmt: skip
    seen: list[tuple[str, str | None, str]] = []
    assert list(read_manifest(p, on_error=lambda where, i, why: seen.append((where, i, why)))) == []
    assert [(w.rsplit(":", 1)[-1], i) for w, i, _ in seen] == [("1", "latin1"), ("2", None)]
    assert all("not UTF-8" in why for _, _, why in seen)
