"""The column schema: one list of columns that the writer and the reader both walk."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from tokunify.data.store import StoreMeta, StreamInfo, TokenStore, write_chunk
from tokunify.data.store.schema import Record, columns
from tokunify.data.store.writer import Reject


def meta(text: bool) -> StoreMeta:
    return StoreMeta(
        streams={
            "units": StreamInfo("units", "units", 50, 1, 50.0, True, {"kind": "mel_units"}, "h1"),
            "codec": StreamInfo("codec", "codec", 1024, 2, 75.0, False, {"kind": "encodec"}, "h2"),
        },
        text_tokenizer={"source": "tok", "hash": "h3", "size": 10} if text else None,
        manifest="m.jsonl",
        manifest_rows=3,
        chunk_size=2,
    )


def record(i: int) -> Record:
    rng = np.random.default_rng(i)
    return Record(
        id=f"u{i}", speaker="s" if i else None, text="hi there" if i else None, seconds=1.5 + i,
        text_ids=np.array([3, 4, i], np.uint32),
        streams={"units": rng.integers(0, 50, 7 + i).astype(np.uint32),
                 "codec": rng.integers(0, 1024, (2, 4 + i)).astype(np.uint32)},
        durations={"units": rng.integers(1, 4, 7 + i).astype(np.uint32)},
        words=[("hi", 0.0, 0.5), ("there", 0.5, 1.0)] if i else None,
        meta={"s2s_target": "u9"} if i else {}, audio=f"/a/{i}.wav", start=0.25 if i else None,
        end=1.75 if i else None,
    )  # fmt: skip


def test_records_round_trip_through_the_shards(tmp_path):
    m = meta(text=True)
    m.save(tmp_path)
    written = [record(0), record(1), record(2)]
    write_chunk(tmp_path, m, 0, written[:2], [Reject("bad", "/a/bad.wav", "unreadable")])
    write_chunk(tmp_path, m, 1, written[2:], [])
    store = TokenStore(tmp_path)
    assert (
        len(store) == 3 and store.rejects == 1 and store.seconds == sum(r.seconds for r in written)
    )
    for want, got in zip(written, (store[i] for i in range(3)), strict=True):
        assert got.streams["codec"].shape == want.streams["codec"].shape  # [n_q, T] back
        for k in ("units", "codec"):
            assert np.array_equal(got.streams[k], want.streams[k])
        assert np.array_equal(got.durations["units"], want.durations["units"])
        assert np.array_equal(got.text_ids, want.text_ids) and "codec" not in got.durations
        assert (got.id, got.speaker, got.text, got.meta, got.audio, got.start, got.end) == (
            want.id, want.speaker, want.text, want.meta, want.audio, want.start, want.end)  # fmt: skip
        assert got.words == want.words and got.seconds == want.seconds
    names = pq.read_schema(tmp_path / "shard-000000.parquet").names
    assert names == [c.name for c in columns(m)]
    assert names[-3:] == ["stream.units", "durations.units", "stream.codec"]


def test_text_ids_column_only_with_a_text_tokenizer(tmp_path):
    m = meta(text=False)
    m.save(tmp_path)
    write_chunk(tmp_path, m, 0, [record(1)], [])
    write_chunk(tmp_path, m, 1, [], [])  # an empty chunk keeps the schema
    assert "text_ids" not in pq.read_schema(tmp_path / "shard-000000.parquet").names
    assert pq.read_schema(tmp_path / "shard-000001.parquet").names == [c.name for c in columns(m)]
    assert TokenStore(tmp_path)[0].text_ids is None
