"""Reading a token store: random access, deterministic shuffled order, per-rank slicing.

LM ids are made at batch time by :class:`~tokunify.core.vocab.UnifiedVocab`, so one tokenization serves
every vocabulary layout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokunify.data.store.layout import StoreError, StoreMeta, done_chunks, shard_file
from tokunify.data.store.schema import Record, columns, empty_record


def shuffled_order(
    rows: Sequence[int], seed: int = 0, epoch: int = 0, shuffle: bool = True, window: int = 4
) -> np.ndarray:
    """Global order over shards of ``rows[k]`` rows: shards shuffled, rows shuffled within windows.

    Deterministic in (seed, epoch); windows keep at most ``window`` shards decoded at a time.
    """
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    idx = np.arange(int(starts[-1]))
    if not shuffle:
        return idx
    rng = np.random.default_rng([seed, epoch])
    shards = rng.permutation(len(rows))
    out = []
    for a in range(0, len(shards), window):
        part = np.concatenate([idx[starts[k] : starts[k + 1]] for k in shards[a : a + window]])
        out.append(rng.permutation(part))
    return np.concatenate(out) if out else idx


class Shard:
    """A shard's columns decoded once into flat numpy arrays; records are O(1) slices."""

    def __init__(self, path: Path, meta: StoreMeta):
        import pyarrow.parquet as pq

        table = pq.read_table(path, memory_map=True)
        self.n = table.num_rows
        self.schema = [c for c in columns(meta) if c.name in table.column_names]
        self.cols: dict[str, Any] = {}
        for c in self.schema:
            col = table.column(c.name).combine_chunks()
            if c.is_list:
                self.cols[c.name] = (
                    col.offsets.to_numpy(),
                    col.values.to_numpy(zero_copy_only=False),
                )
            else:
                self.cols[c.name] = col.to_pylist()

    def record(self, i: int) -> Record:
        r = empty_record()
        for c in self.schema:
            v = self.cols[c.name]
            if c.is_list:
                off, val = v
                c.take(r, val[off[i] : off[i + 1]])
            else:
                c.take(r, v[i])
        return r


class TokenStore:
    """Reads a store: random access, deterministic shuffled iteration, per-rank slicing."""

    def __init__(self, root: str | Path, require_complete: bool = True, max_open_shards: int = 8):
        self.root = Path(root)
        self.meta = StoreMeta.load(self.root)
        self.chunks: list[int] = []
        self.rows: list[int] = []
        self.rejects = 0
        self.seconds = 0.0
        for chunk, stats in done_chunks(self.root).items():
            self.chunks.append(chunk)
            self.rows.append(int(stats["rows"]))
            self.rejects += int(stats["rejects"])
            self.seconds += float(stats["seconds"])
        missing = sorted(set(range(self.meta.num_chunks)) - set(self.chunks))
        if require_complete and missing:
            raise StoreError(
                f"{self.root}: incomplete store, {len(missing)} of {self.meta.num_chunks} chunks missing "
                f"(e.g. {missing[:5]}); finish or merge the tokenize jobs, or open with require_complete=False"
            )
        self.missing_chunks = missing
        self._starts = np.concatenate([[0], np.cumsum(self.rows)]).astype(np.int64)
        self._cache: OrderedDict[int, Shard] = OrderedDict()
        self.max_open_shards = max_open_shards

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> Shard:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        shard = Shard(shard_file(self.root, self.chunks[k]), self.meta)
        self._cache[k] = shard
        if len(self._cache) > self.max_open_shards:
            self._cache.popitem(last=False)
        return shard

    def __getitem__(self, i: int) -> Record:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._shard(k).record(i - int(self._starts[k]))

    def order(
        self, seed: int = 0, epoch: int = 0, shuffle: bool = True, window: int = 4
    ) -> np.ndarray:
        """Global record order (see :func:`shuffled_order`)."""
        return shuffled_order(self.rows, seed, epoch, shuffle, window)

    def ids(self) -> list[str]:
        """Every record id in index order (reads only the ``id`` column)."""
        import pyarrow.parquet as pq

        out: list[str] = []
        for c in self.chunks:
            out += pq.read_table(shard_file(self.root, c), columns=["id"]).column("id").to_pylist()
        return out

    def iterate(
        self,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        start: int = 0,
    ) -> Iterator[Record]:
        """Records of this rank (every ``world_size``-th of the global order), from position ``start``."""
        order = self.order(seed, epoch, shuffle)[rank::world_size]
        for i in order[start:]:
            yield self[int(i)]

    def check_streams(
        self, expected: dict[str, tuple[str, int, int]], source: str = "bundle"
    ) -> None:
        """Refuse unless every expected stream ``name -> (kind, cardinality, n_q)`` is in the store."""
        for name, (kind, card, n_q) in expected.items():
            info = self.meta.streams.get(name)
            if info is None:
                raise StoreError(
                    f"{self.root}: no stream {name!r} for the {source} (store has {sorted(self.meta.streams)})"
                )
            if (info.kind, info.cardinality, info.num_codebooks) != (kind, card, n_q):
                raise StoreError(
                    f"{self.root}: stream {name!r} is {info.kind} {info.num_codebooks} x {info.cardinality}, "
                    f"the {source} expects {kind} {n_q} x {card}; tokenizers do not match"
                )
