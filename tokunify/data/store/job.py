"""The resumable, sharded job that fills a store chunk by chunk (``tokenize``, ``synth-interleave``).

A job is: ``rows`` (any list, one item per future record or reject), a :class:`StoreMeta` whose
``manifest_rows``/``chunk_size`` cut them into chunks, and a *worker factory*: ``make(device)``
returns an object whose ``process(chunk, rows) -> (records, rejects)`` turns the rows of one chunk
into store records and rejects (:class:`ChunkProcessor`). :func:`run_store_job` then

- creates the store (or checks that an existing one has the same fingerprint) and skips chunks that
  are done, so a killed job resumes: every row lands exactly once, as a record or a reject;
- takes this process's slice of the chunks: ``--shard i/N`` wins, else torchrun/accelerate
  (``RANK``/``WORLD_SIZE``) or SLURM (:mod:`tokunify.data.launcher`); slices that share ``root`` on one
  file system make one store and the last one to finish reports it complete;
- checks that every chunk's records + rejects are its rows (:func:`check_counts`; a chunk that
  lost or gained rows fails loudly and is not written);
- publishes each chunk atomically with :func:`~tokunify.data.store.writer.write_chunk` (shard, rejects
  file, stats last);
- runs ``workers`` local processes (``spawn``; each builds its own worker from the factory and gets
  only the rows of its chunks), or hands the chunks to an ``executor`` (e.g. Ray).

Example (a job that stores each row's text)::

    class Upper:                              # top level: picklable for --workers
        def __init__(self, device: str): ...  # load models here, once per process
        def process(self, chunk, rows):
            return [Record(id=r, text=r.upper(), ...) for r in rows], []

    meta = StoreMeta(streams={}, text_tokenizer=None, manifest="words.txt",
                     manifest_rows=len(rows), chunk_size=100)
    result = run_store_job("out/", meta, rows, Upper, JobOptions(workers=2))
    print(result.summary())  # rows, rejects, chunks, chunks_skipped, slice, complete, ...

The factory must be picklable when ``workers > 1`` (a top-level class or a ``functools.partial``
of one), and so must the rows.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any, Protocol

from tokunify.data.launcher import Launch, detect_launch, device_for
from tokunify.data.store.layout import StoreError, StoreMeta, done_chunks, is_done, open_or_create
from tokunify.data.store.schema import Record
from tokunify.data.store.writer import Reject, write_chunk


class ChunkProcessor(Protocol):
    """Turns the rows of one chunk into records and rejects (it does not write)."""

    def process(self, chunk: int, rows: list[Any]) -> tuple[list[Record], list[Reject]]: ...


WorkerFactory = Callable[[str], ChunkProcessor]  # device -> processor (built once per process)
Stats = dict[str, Any]  # write_chunk's stats + "total" (rows of the chunk)
Done = Callable[[Stats], None]
Executor = Callable[
    [list[int], str, Done], None
]  # (chunks, device, done): publish, done(stats) each


@dataclass(frozen=True)
class JobOptions:
    """How a store job runs (the CLI fields every store-filling command shares)."""

    shard: str | None = None
    """This job's slice ``i/N`` of the chunks; default from the launcher, else ``0/1``."""
    workers: int = 1
    """Local worker processes."""
    device: str = "cpu"
    """Device for the workers; ``cuda`` means ``cuda:LOCAL_RANK`` under a launcher."""
    progress: bool = True
    """Show a progress bar."""
    name: str = "store"
    """The job's name in messages (``a tokenize worker exited ...``)."""
    unit: str = "row"
    """What the progress bar counts."""


@dataclass
class JobResult:
    """What a job did in this process."""

    totals: dict[str, float]  # rows, rejects, seconds (sums of chunk stats), chunks
    elapsed_s: float
    chunks_skipped: int  # of this slice, done before the job started
    launch: Launch
    device: str
    complete: bool  # every chunk of the store is done (by any slice)

    def summary(self) -> dict[str, Any]:
        return {
            **self.totals,
            "elapsed_s": self.elapsed_s,
            "chunks_skipped": self.chunks_skipped,
            "slice": f"{self.launch.index}/{self.launch.count}",
            "launcher": self.launch.launcher,
            "device": self.device,
            "complete": self.complete,
        }


def rows_of(rows: Sequence[Any], meta: StoreMeta, chunk: int) -> list[Any]:
    """The rows of ``chunk``."""
    r = meta.chunk_rows(chunk)
    return list(rows[r.start : r.stop])


class ChunkCountError(StoreError):
    """A worker returned more or fewer records + rejects than its chunk has rows."""


def check_counts(chunk: int, rows: int, records: int, rejects: int, name: str = "store") -> None:
    """Every row of a chunk lands exactly once, as a record or a reject; else the chunk fails
    (nothing of it is published, so it is not done and a rerun redoes it)."""
    if records + rejects != rows:
        raise ChunkCountError(
            f"{name} chunk {chunk}: {rows} rows gave {records} records + {rejects} rejects = "
            f"{records + rejects}; the worker {'lost' if records + rejects < rows else 'added'} rows, "
            "the chunk is not written"
        )


def run_chunk(
    root: str | Path,
    meta: StoreMeta,
    worker: ChunkProcessor,
    chunk: int,
    rows: list[Any],
    name: str = "store",
) -> Stats:
    """Process one chunk and publish it; returns its stats (with ``total``: rows of the chunk).

    Raises :class:`ChunkCountError` when records + rejects != rows (the chunk stays undone)."""
    records, rejects = worker.process(chunk, rows)
    check_counts(chunk, len(rows), len(records), len(rejects), name)
    return {**write_chunk(root, meta, chunk, records, rejects), "total": len(rows)}


def run_store_job(
    root: str | Path,
    meta: StoreMeta,
    rows: Sequence[Any],
    make_worker: WorkerFactory,
    opts: JobOptions,
    *,
    executor: Executor | None = None,
    postfix: Callable[[dict[str, float], float], str] | None = None,
) -> JobResult:
    """Fill the store at ``root`` with this process's unfinished chunks of ``rows``.

    ``executor(todo, device, done)`` replaces the local workers (it must publish each chunk and
    call ``done(stats)``); ``postfix(totals, elapsed_s)`` adds text to the progress bar.
    """
    t0 = time.perf_counter()
    root = Path(root)
    if len(rows) != meta.manifest_rows:
        raise ValueError(f"{root}: the job has {len(rows)} rows, its meta {meta.manifest_rows}")
    launch = detect_launch(opts.shard)
    device = device_for(opts.device, launch)
    open_or_create(root, meta)
    mine_all = [c for c in range(meta.num_chunks) if launch.owns(c)]
    todo = [c for c in mine_all if not is_done(root, c)]
    totals: dict[str, float] = {"rows": 0, "rejects": 0, "seconds": 0.0, "chunks": 0}
    bar = _progress(sum(len(meta.chunk_rows(c)) for c in todo), opts.progress, opts.unit)

    def done(stats: Stats) -> None:
        for k in ("rows", "rejects", "seconds"):
            totals[k] += stats[k]
        totals["chunks"] += 1
        bar(stats["total"], postfix(totals, time.perf_counter() - t0) if postfix else "")

    if executor is not None:
        if todo:
            executor(todo, device, done)
    elif opts.workers <= 1 or len(todo) <= 1:
        worker = make_worker(device) if todo else None
        for c in todo:
            done(run_chunk(root, meta, worker, c, rows_of(rows, meta, c), opts.name))  # type: ignore[arg-type]
    else:
        _run_workers(root, meta, rows, make_worker, opts, device, todo, done)
    bar(None, "")
    return JobResult(
        totals=totals,
        elapsed_s=time.perf_counter() - t0,
        chunks_skipped=len(mine_all) - len(todo),
        launch=launch,
        device=device,
        complete=len(done_chunks(root)) == meta.num_chunks,
    )


def report_store(root: str | Path, meta: StoreMeta, complete: bool) -> None:
    """Slices share ``root``: whichever process finishes last finds every chunk there."""
    if complete:
        print(f"store {root} complete: all {meta.num_chunks} chunks")
    else:
        left = meta.num_chunks - len(done_chunks(root))
        print(f"store {root}: {left} chunks of other slices still to come")


def _worker_main(
    root: str,
    meta: StoreMeta,
    make_worker: WorkerFactory,
    device: str,
    chunks: dict[int, list[Any]],
    queue: Any,
    threads: int,
    name: str,
) -> None:
    import torch

    torch.set_num_threads(threads)
    worker = make_worker(device)
    for c, rows in chunks.items():
        try:
            queue.put(run_chunk(root, meta, worker, c, rows, name))
        except ChunkCountError as e:  # the parent raises it: one line, not a worker traceback
            queue.put(str(e))
            return
    queue.put(None)


def _run_workers(
    root: Path,
    meta: StoreMeta,
    rows: Sequence[Any],
    make_worker: WorkerFactory,
    opts: JobOptions,
    device: str,
    todo: list[int],
    done: Done,
) -> None:
    n = min(opts.workers, len(todo))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = []
    for w in range(n):
        mine = {c: rows_of(rows, meta, c) for c in todo[w::n]}
        work = (str(root), meta, make_worker, device, mine, queue, threads, opts.name)
        procs.append(ctx.Process(target=_worker_main, args=work))
    for p in procs:
        p.start()
    finished = 0
    while finished < n:
        try:
            item = queue.get(timeout=5)
        except Empty:  # a worker killed without a word would otherwise leave us waiting forever
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.terminate()
                raise RuntimeError(
                    f"a {opts.name} worker exited with {dead[0]}; finished chunks are kept, rerun to resume"
                ) from None
            continue
        if item is None:
            finished += 1
        elif isinstance(item, str):  # a chunk failed its count check
            for p in procs:
                p.terminate()
            raise ChunkCountError(item)
        else:
            done(item)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a {opts.name} worker exited with {p.exitcode}; rerun to resume")


def _progress(total: int, enabled: bool, unit: str) -> Callable[[int | None, str], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, disable=not enabled, dynamic_ncols=True)

    def update(n: int | None, text: str) -> None:
        if n is None:
            bar.close()
            return
        bar.update(n)
        if text:
            bar.set_postfix_str(text)

    return update
