"""The generic store job: chunks, rejects, resume, slices and local workers, with a worker that
needs no tokenizer (the records hold only text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokunify.data.store import (
    Record,
    Reject,
    StoreError,
    StoreMeta,
    TokenStore,
    done_chunks,
    rows_digest,
)
from tokunify.data.store.job import ChunkCountError, JobOptions, run_store_job

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


class DropsLast(Upper):
    """A faulty worker: it loses the last row of every chunk that has more than one."""

    def process(self, chunk: int, rows: list[str]) -> tuple[list[Record], list[Reject]]:
        records, rejects = super().process(chunk, rows)
        return (records[:-1], rejects) if len(rows) > 1 else (records, rejects)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_drops_a_row_fails_its_chunk(tmp_path, workers):
    root = tmp_path / f"w{workers}"
    with pytest.raises(ChunkCountError) as err:
        run_store_job(root, meta(), ROWS, DropsLast, JobOptions(progress=False, workers=workers, name="test"))  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and "the chunk is not written" in msg
    # ROWS[0:3] = "", "line 1", "line 2": 2 records, 1 reject, the worker keeps 1 record
    # chunk 0 = "", "line 1", "line 2": 2 records and 1 reject, of which the worker keeps 1 record
    want = "test chunk 0: 3 rows gave 1 records + 1 rejects = 2; the worker lost rows"
    assert want in msg if workers == 1 else "the worker lost rows" in msg
    assert 0 not in done_chunks(root) and not (root / "shard-000000.parquet").exists()
    with pytest.raises(Exception, match="incomplete"):  # the store is not complete
        TokenStore(root)
    # the same store with a sound worker: the failed chunks are redone, every row lands once
    s = run_store_job(root, meta(), ROWS, Upper, JobOptions(progress=False)).summary()
    assert s["complete"] and s["chunks"] >= 1
    assert [r.text for r in TokenStore(root)] == [t.upper() for t in ROWS if t]


def test_a_worker_that_adds_a_row_fails_its_chunk(tmp_path):
    class Doubles(Upper):
        def process(self, chunk: int, rows: list[str]) -> tuple[list[Record], list[Reject]]:
            records, rejects = super().process(chunk, rows)
            return records + records[:1], rejects

    with pytest.raises(ChunkCountError, match="chunk 0: 3 rows gave 3 records \\+ 1 rejects = 4; the worker added rows"):  # fmt: skip
        run_store_job(tmp_path, meta(), ROWS, Doubles, JobOptions(progress=False))
    assert not done_chunks(tmp_path)


def test_an_edited_row_list_of_the_same_length_is_refused_on_resume(tmp_path):
    def job(rows: list[str]) -> StoreMeta:
        m = meta()
        m.provenance = {"manifest": rows_digest(rows)}
        return m

    root = tmp_path / "s"
    first = run_store_job(root, job(ROWS), ROWS, Upper, JobOptions(progress=False, shard="0/2"))
    assert not first.complete
    edited = [*ROWS[:-1], "an edited last line"]
    with pytest.raises(StoreError) as err:
        run_store_job(root, job(edited), edited, Upper, JobOptions(progress=False))
    msg = str(err.value)
    assert msg.startswith(
        f"{root}: exists, made from other inputs or settings: provenance.manifest ("
    )
    assert "\n" not in msg and "streams" not in msg and "chunk_size" not in msg
    again = run_store_job(root, job(ROWS), ROWS, Upper, JobOptions(progress=False))
    assert again.complete and again.chunks_skipped == 2 and again.totals["chunks"] == 2


def test_a_store_without_provenance_is_not_resumed_by_a_job_with_it(tmp_path):
    run_store_job(tmp_path, meta(), ROWS, Upper, JobOptions(progress=False, shard="0/2"))
    m = meta()
    m.provenance = {"manifest": rows_digest(ROWS)}
    with pytest.raises(StoreError, match="written before stores recorded their inputs"):
        run_store_job(tmp_path, m, ROWS, Upper, JobOptions(progress=False))
    assert run(tmp_path)["complete"]  # the job it was made by still resumes it
