"""The generic store job: chunks, rejects, resume, slices and local workers, with a worker that
needs no tokenizer (the records hold only text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokunify.store import Record, Reject, StoreMeta, TokenStore, done_chunks
from tokunify.store.job import JobOptions, run_store_job

ROWS = [f"line {i}" if i % 5 else "" for i in range(11)]  # every fifth row is empty: a reject
CHUNK = 3


class Upper:
    """Upper-cases each row; empty rows are rejected."""

    def __init__(self, device: str):
        self.device = device

    def process(self, chunk: int, rows: list[str]) -> tuple[list[Record], list[Reject]]:
        records, rejects = [], []
        for i, text in enumerate(rows):
            rid = f"c{chunk}-{i}"
            if not text:
                rejects.append(Reject(rid, None, "empty line"))
                continue
            records.append(Record(id=rid, speaker=None, text=text.upper(), seconds=0.0,
                                  text_ids=None, streams={}, durations={}, words=None))  # fmt: skip
        return records, rejects


def meta() -> StoreMeta:
    return StoreMeta(streams={}, text_tokenizer=None, manifest="rows", manifest_rows=len(ROWS),
                     chunk_size=CHUNK)  # fmt: skip


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.startswith(".")}


def run(root: Path, **kw) -> dict:
    return run_store_job(root, meta(), ROWS, Upper, JobOptions(progress=False, **kw)).summary()


def test_job_writes_every_row_once_and_resumes(tmp_path):
    s = run(tmp_path / "a")
    assert s["rows"] == 8 and s["rejects"] == 3 and s["chunks"] == 4 and s["complete"]
    texts = [r.text for r in TokenStore(tmp_path / "a")]
    assert texts == [t.upper() for t in ROWS if t]
    rejects = "".join(p.read_text() for p in sorted((tmp_path / "a").glob("rejects-*.jsonl")))
    assert rejects.count("empty line") == 3
    again = run(tmp_path / "a")  # resumed: nothing left to do
    assert again["chunks"] == 0 and again["chunks_skipped"] == 4


def test_slices_and_workers_make_the_same_store(tmp_path):
    run(tmp_path / "single")
    first = run(tmp_path / "sliced", shard="0/2")
    assert not first["complete"] and set(done_chunks(tmp_path / "sliced")) == {0, 2}
    assert run(tmp_path / "sliced", shard="1/2")["complete"]
    assert files(tmp_path / "sliced") == files(tmp_path / "single")
    assert run(tmp_path / "workers", workers=2)["rows"] == 8
    assert files(tmp_path / "workers") == files(tmp_path / "single")


def test_rows_must_match_the_meta(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        run_store_job(tmp_path, meta(), ROWS[:-1], Upper, JobOptions(progress=False))
