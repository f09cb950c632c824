"""On-the-fly tokenization (the Llama-Mimi style path): train on a manifest, cache a store as you go.

:class:`CachedManifestStore` looks like a :class:`~tokunify.data.store.TokenStore` to the training data
code, but its index space is the manifest's rows. The first time a record of chunk ``c`` is asked
for, the whole chunk is tokenized with the bundle's own speech tokenizer (the same
:class:`~tokunify.tokenize.job.ChunkWorker` as ``tokunify tokenize``) and published to the cache
store; every later read, the second epoch's included, is a plain shard read. The cache is a normal
store: ``tokunify inspect`` reads it, and a finished one can be passed as ``data.stores``.

Costs: the first epoch runs the speech tokenizer inside the training process (rank), so the
accelerator waits on feature extraction and k-means/codec encoding; ranks that reach the same chunk
tokenize it twice (writes are atomic, the result identical). Rows rejected by the checks of
``tokunify tokenize`` (unreadable or too short audio) become empty records that no task uses.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.data.manifest import Entry
from tokunify.data.store import (
    Record,
    StoreError,
    StoreMeta,
    TokenStore,
    is_done,
    open_or_create,
    rows_digest,
    shard_file,
    shuffled_order,
)
from tokunify.data.store.job import run_chunk
from tokunify.data.store.reader import Shard
from tokunify.data.store.schema import empty_record
from tokunify.tokenize.job import ChunkWorker, Row, TokenizeArgs, build_meta, load_rows

MAX_OPEN_SHARDS = 8  # decoded chunks kept (the shuffled order walks windows of 4 shards)


def cache_dir(root: str | Path, manifest: str | Path, tokenizer_hash: str, rows: str) -> Path:
    """The cache store of ``manifest`` under ``root``, one per (manifest path, tokenizer, rows
    digest): an edited manifest gets a new cache instead of a refused or stale one."""
    key = f"{Path(manifest).resolve()}\n{tokenizer_hash}\n{rows}"
    return Path(root) / f"{Path(manifest).stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class CachedManifestStore:
    """A manifest read as a store, tokenized chunk by chunk on first access and cached."""

    def __init__(
        self,
        manifest: str | Path,
        cache_root: str | Path,
        tokenizer_hash: str,
        stream: str,
        tokenizer: tuple[dict[str, Any], Path],
        chunk_size: int = 256,
        device: str = "cpu",
    ):
        self.rows: list[Row] = load_rows(manifest)
        if not self.rows:
            raise StoreError(f"{manifest}: no rows to train on")
        cache = cache_dir(cache_root, manifest, tokenizer_hash, rows_digest(self.rows))
        self.args = TokenizeArgs(
            manifest=str(manifest), out=str(cache), chunk_size=chunk_size, device=device,
            progress=False,
        )  # fmt: skip
        self.meta: StoreMeta = build_meta(self.args, self.rows, {stream: tokenizer})
        self.root = Path(cache)
        open_or_create(self.root, self.meta)
        self._worker: ChunkWorker | None = None
        self._shards: OrderedDict[int, tuple[Shard, dict[str, int]]] = OrderedDict()
        self.tokenized_chunks = 0  # chunks this object tokenized (the rest came from the cache)

    check_streams = TokenStore.check_streams

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def chunk_rows(self) -> list[int]:
        return [len(self.meta.chunk_rows(c)) for c in range(self.meta.num_chunks)]

    def _chunk(self, c: int) -> tuple[Shard, dict[str, int]]:
        if c not in self._shards:
            if not is_done(self.root, c):
                if self._worker is None:
                    self._worker = ChunkWorker(self.args, self.meta)
                r = self.meta.chunk_rows(c)
                run_chunk(self.root, self.meta, self._worker, c, self.rows[r.start : r.stop])
                self.tokenized_chunks += 1
            shard = Shard(shard_file(self.root, c), self.meta)
            ids = shard.cols["id"] if shard.n else []
            self._shards[c] = (shard, {u: j for j, u in enumerate(ids)})
            if len(self._shards) > MAX_OPEN_SHARDS:
                self._shards.popitem(last=False)
        self._shards.move_to_end(c)
        return self._shards[c]

    def __getitem__(self, i: int) -> Record:
        if not 0 <= i < len(self):
            raise IndexError(i)
        row = self.rows[i]
        shard, where = self._chunk(i // self.meta.chunk_size)
        if isinstance(row, Entry) and row.id in where:
            return shard.record(where[row.id])
        return empty_record()  # rejected: eligible for no task

    def order(self, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
        return shuffled_order(self.chunk_rows, seed, epoch, shuffle)

    def ids(self) -> list[str]:
        """Row ids in index order (rejected rows get an id no record has)."""
        return [
            r.id if isinstance(r, Entry) else f"\0rejected-{i}" for i, r in enumerate(self.rows)
        ]


def manifest_stores(
    manifests: list[str],
    cache_root: str | Path,
    stream: str,
    bundle: Any,
    chunk_size: int,
    device: str,
) -> list[CachedManifestStore]:
    """One cached store per manifest, tokenized with the bundle's recorded speech tokenizer."""
    if not manifests:
        return []
    cfg = bundle.spec.speech_tokenizers.get(stream)
    if cfg is None:
        raise StoreError(
            f"{bundle.path}: data.manifests needs the bundle's speech tokenizer for stream {stream!r} "
            "(extend with --speech-tokenizer)"
        )
    cfg = {k: v for k, v in cfg.items() if k != "hash"}
    return [
        CachedManifestStore(
            m,
            cache_root,
            bundle.spec.speech_tokenizers[stream].get("hash", ""),
            stream,
            (cfg, Path(bundle.path)),
            chunk_size,
            device,
        )
        for m in manifests
    ]
