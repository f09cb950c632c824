"""The token store: Parquet shards of per-utterance *local* ids ("tokenize once, format many").

::

    STORE/
      store.json                 streams (tokenizer configs + content hashes), text tokenizer, chunking
      shard-000012.parquet       one chunk of the manifest (rows in manifest order)
      shard-000012.json          its stats: rows, rejects, audio seconds (written last: marks it done)
      rejects-000012.jsonl       rejected rows of that chunk: id, path, reason

Columns: ``id``, ``speaker``, ``text``, ``audio``, ``start``, ``end``, ``seconds``, ``meta`` (JSON of extra manifest fields), ``text_ids`` (list<uint32>), ``words``
(list<struct<word, start, end>>), and per speech stream ``stream.NAME`` (list<uint32>; codec codes
flattened codebook-major, ``[n_q * T]``) and ``durations.NAME`` (run lengths of deduplicated units).
Any Parquet reader (pyarrow, pandas, ``datasets``) opens the shards. LM ids are made at batch time by
:class:`~tokunify.vocab.UnifiedVocab`, so one tokenization serves every vocabulary layout.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STORE_FORMAT = "tokunify.store"
STORE_VERSION = 1
META_FILE = "store.json"


class StoreError(ValueError):
    """A store is malformed, incomplete, or does not match what reads it."""


@dataclass
class StreamInfo:
    """One speech stream of a store."""

    name: str
    kind: str  # "units" or "codec"
    cardinality: int
    num_codebooks: int
    frame_rate: float
    dedup: bool
    tokenizer: dict[str, Any]
    hash: str  # content hash of the tokenizer (config + centroid bytes)


@dataclass
class StoreMeta:
    streams: dict[str, StreamInfo]
    text_tokenizer: dict[str, Any] | None  # {"source", "hash", "size"}
    manifest: str
    manifest_rows: int
    chunk_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chunks(self) -> int:
        return -(-self.manifest_rows // self.chunk_size)

    def fingerprint(self) -> str:
        """What must match for two stores (or slices) to be merged: tokenizers and chunking."""
        parts = {
            "streams": {k: v.hash for k, v in sorted(self.streams.items())},
            "text": (self.text_tokenizer or {}).get("hash"),
            "manifest_rows": self.manifest_rows,
            "chunk_size": self.chunk_size,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            **d,
            "fingerprint": self.fingerprint(),
        }

    def save(self, root: Path) -> None:
        tmp = root / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(root / META_FILE)

    @classmethod
    def load(cls, root: str | Path) -> StoreMeta:
        p = Path(root) / META_FILE
        if not p.is_file():
            raise StoreError(f"{p}: missing; not a tokunify token store")
        d = json.loads(p.read_text())
        if d.get("format") != STORE_FORMAT or d.get("version") != STORE_VERSION:
            raise StoreError(f"{p}: not a version-{STORE_VERSION} tokunify store")
        return cls(
            streams={k: StreamInfo(**v) for k, v in d["streams"].items()},
            text_tokenizer=d.get("text_tokenizer"),
            manifest=d["manifest"],
            manifest_rows=int(d["manifest_rows"]),
            chunk_size=int(d["chunk_size"]),
            extra=d.get("extra", {}),
        )


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_hash(config: dict[str, Any], base_dir: str | Path | None = None) -> str:
    """Content hash of a speech tokenizer: its config, with file references replaced by their bytes' hash."""
    cfg = {k: v for k, v in config.items() if k not in ("frame_rate", "sample_rate")}
    for key in ("centroids",):
        if cfg.get(key):
            p = Path(cfg[key])
            p = p if p.is_absolute() or base_dir is None else Path(base_dir) / p
            cfg[key] = "sha256:" + file_hash(p) if p.is_file() else str(cfg[key])
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def text_tokenizer_hash(tokenizer: Any, size: int | None = None) -> str:
    """Hash of the base text vocabulary (ids ``< size``): same pieces, same ids."""
    n = len(tokenizer) if size is None else size
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    return hashlib.sha256("\n".join(map(str, pieces)).encode()).hexdigest()[:16]


def shard_name(chunk: int) -> str:
    return f"shard-{chunk:06d}"


# ---- records ----------------------------------------------------------------------------------
@dataclass
class Record:
    """One utterance of a store: local ids per stream, as tokenizers produced them."""

    id: str
    speaker: str | None
    text: str | None
    seconds: float
    text_ids: np.ndarray | None  # [n] uint32
    streams: dict[str, np.ndarray]  # units [T]; codec [n_q, T]
    durations: dict[str, np.ndarray]  # dedup run lengths [T]
    words: list[tuple[str, float, float]] | None
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # extra manifest fields, e.g. {"s2s_target": id}
    audio: str | None = None  # source audio path
    start: float | None = None  # segment of the source, seconds
    end: float | None = None


class _Shard:
    """A shard's columns decoded once into flat numpy arrays; records are O(1) slices."""

    def __init__(self, path: Path, meta: StoreMeta):
        import pyarrow.parquet as pq

        table = pq.read_table(path, memory_map=True)
        self.n = table.num_rows
        self.cols: dict[str, Any] = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if name == "words":
                self.cols[name] = col.to_pylist()
            elif hasattr(col, "offsets") and hasattr(col, "values"):
                self.cols[name] = (
                    col.offsets.to_numpy(),
                    col.values.to_numpy(zero_copy_only=False),
                )
            else:
                self.cols[name] = col.to_pylist()
        self.meta = meta

    def record(self, i: int) -> Record:
        c = self.cols

        def lst(name: str) -> np.ndarray | None:
            if name not in c:
                return None
            off, val = c[name]
            return val[off[i] : off[i + 1]]

        streams, durations = {}, {}
        for name, info in self.meta.streams.items():
            ids = lst("stream." + name)
            if ids is None:
                continue
            streams[name] = ids.reshape(info.num_codebooks, -1) if info.kind == "codec" else ids
            d = lst("durations." + name)
            if d is not None:
                durations[name] = d
        words = c.get("words", [None] * self.n)[i]
        return Record(
            id=c["id"][i],
            speaker=c["speaker"][i],
            text=c["text"][i],
            seconds=float(c["seconds"][i]),
            text_ids=lst("text_ids"),
            streams=streams,
            durations=durations,
            words=[(w["word"], w["start"], w["end"]) for w in words] if words else None,
            meta=json.loads(c["meta"][i]) if c.get("meta") and c["meta"][i] else {},
            audio=c["audio"][i] if "audio" in c else None,
            start=c["start"][i] if "start" in c else None,
            end=c["end"][i] if "end" in c else None,
        )


class TokenStore:
    """Reads a store: random access, deterministic shuffled iteration, per-rank slicing."""

    def __init__(self, root: str | Path, require_complete: bool = True, max_open_shards: int = 8):
        self.root = Path(root)
        self.meta = StoreMeta.load(self.root)
        self.chunks: list[int] = []
        self.rows: list[int] = []
        self.rejects = 0
        self.seconds = 0.0
        for p in sorted(self.root.glob("shard-*.json")):
            stats = json.loads(p.read_text())
            self.chunks.append(int(stats["chunk"]))
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
        self._cache: OrderedDict[int, _Shard] = OrderedDict()
        self.max_open_shards = max_open_shards

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> _Shard:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        shard = _Shard(self.root / (shard_name(self.chunks[k]) + ".parquet"), self.meta)
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
        """Global record order: shards shuffled, rows shuffled within windows of ``window`` shards.

        Deterministic in (seed, epoch); windows keep at most ``window`` shards decoded at a time.
        """
        idx = np.arange(len(self))
        if not shuffle:
            return idx
        rng = np.random.default_rng([seed, epoch])
        shards = rng.permutation(len(self.rows))
        out = []
        for a in range(0, len(shards), window):
            rows = np.concatenate(
                [idx[self._starts[k] : self._starts[k + 1]] for k in shards[a : a + window]]
            )
            out.append(rng.permutation(rows))
        return np.concatenate(out) if out else idx

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
