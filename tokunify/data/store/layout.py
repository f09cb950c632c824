"""The store's directory layout and its ``store.json``: the one place that names store files.

::

    STORE/
      store.json                 streams (tokenizer configs + content hashes), text tokenizer, chunking,
                                 provenance (hashes of the manifest's rows, models, settings)
      shard-000012.parquet       one chunk of the manifest (rows in manifest order)
      shard-000012.json          its stats: rows, rejects, audio seconds (written last: marks it done)
      rejects-000012.jsonl       rejected rows of that chunk: id, path, reason

The manifest is cut into fixed chunks of ``chunk_size`` rows; chunk ``c`` becomes shard ``c``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokunify.core.fsio import atomic_write_text

STORE_FORMAT = "tokunify.store"  # a file-format name, not a module path
STORE_VERSION = 1
META_FILE = "store.json"


class StoreError(ValueError):
    """A store is malformed, incomplete, or does not match what reads it."""


def shard_name(chunk: int) -> str:
    return f"shard-{chunk:06d}"


def shard_file(root: str | Path, chunk: int) -> Path:
    """The Parquet shard of ``chunk``."""
    return Path(root) / f"{shard_name(chunk)}.parquet"


def stats_file(root: str | Path, chunk: int) -> Path:
    """The stats of ``chunk``: written last, its presence marks the chunk done."""
    return Path(root) / f"{shard_name(chunk)}.json"


def rejects_file(root: str | Path, chunk: int) -> Path:
    return Path(root) / f"rejects-{chunk:06d}.jsonl"


def chunk_files(root: str | Path, chunk: int) -> list[Path]:
    """Every file of a chunk, in the order a writer must publish them (stats last)."""
    return [shard_file(root, chunk), rejects_file(root, chunk), stats_file(root, chunk)]


def done_chunks(root: str | Path) -> dict[int, dict[str, Any]]:
    """``chunk -> stats`` of every finished chunk of a store directory."""
    out = {}
    for p in sorted(Path(root).glob("shard-*.json")):
        stats = json.loads(p.read_text())
        out[int(stats["chunk"])] = stats
    return out


def is_done(root: str | Path, chunk: int) -> bool:
    return stats_file(root, chunk).exists()


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


def _plain(o: Any) -> Any:
    """JSON form of what a row holds beyond JSON: dataclasses, paths, numpy values."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    raise TypeError(f"cannot digest a row holding {type(o).__name__}")


def rows_digest(rows: Iterable[Any]) -> str:
    """Content hash (16 hex digits) of a job's rows, in order: what the manifest says about each
    row (id, audio, times, text, speaker, ...; a reject's reason). Two manifests that give the same
    rows give the same digest, whatever their format or path; one edited row changes it."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, default=_plain, sort_keys=True).encode() + b"\n")
    return h.hexdigest()[:16]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


@dataclass
class StoreMeta:
    streams: dict[str, StreamInfo]
    text_tokenizer: dict[str, Any] | None  # {"source", "hash", "size"}
    manifest: str
    manifest_rows: int
    chunk_size: int
    extra: dict[str, Any] = field(default_factory=dict)
    """What the job records for its readers (kind, statistics); not compared."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Every other input that decides the rows, as JSON values: ``manifest`` (the
    :func:`rows_digest` of the rows), content hashes of model files and directories
    (:func:`tokunify.core.fsio.content_hash`), the settings. Part of :meth:`fingerprint`: a resumed job
    whose provenance differs is refused, naming what differs."""

    @property
    def num_chunks(self) -> int:
        return -(-self.manifest_rows // self.chunk_size)

    def chunk_rows(self, chunk: int) -> range:
        """Manifest row indices of ``chunk``."""
        a = chunk * self.chunk_size
        return range(a, min(a + self.chunk_size, self.manifest_rows))

    def _identity(self) -> dict[str, Any]:
        parts: dict[str, Any] = {
            "streams": {k: v.hash for k, v in sorted(self.streams.items())},
            "text": (self.text_tokenizer or {}).get("hash"),
            "manifest_rows": self.manifest_rows,
            "chunk_size": self.chunk_size,
        }
        if self.provenance:  # stores written before provenance keep their fingerprint
            parts["provenance"] = self.provenance
        return parts

    def fingerprint(self) -> str:
        """What must match for two stores (or slices) to be merged or a store to be resumed:
        tokenizers, chunking and the provenance (the rows' content, models, settings)."""
        parts = json.dumps(self._identity(), sort_keys=True, default=str)
        return hashlib.sha256(parts.encode()).hexdigest()[:16]

    def differences(self, other: StoreMeta) -> list[str]:
        """What differs between two metas' fingerprints, one ``key (old -> new)`` per item:
        ``provenance.manifest``, ``streams.units``, ``provenance.chat_data.settings.seed``, ..."""
        a = _flat(json.loads(json.dumps(self._identity(), default=str)))
        b = _flat(json.loads(json.dumps(other._identity(), default=str)))
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return [f"{k} ({_short(a.get(k))} -> {_short(b.get(k))})" for k in keys]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            **d,
            "fingerprint": self.fingerprint(),
        }

    def save(self, root: str | Path) -> None:
        atomic_write_text(Path(root) / META_FILE, json.dumps(self.to_dict(), indent=2) + "\n")

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
            provenance=d.get("provenance", {}),
        )


def open_or_create(root: str | Path, meta: StoreMeta) -> None:
    """Create the store at ``root`` with ``meta``, or check that the existing one matches it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if (root / META_FILE).exists():
        old = StoreMeta.load(root)
        if meta.provenance and not old.provenance:
            raise StoreError(
                f"{root}: written before stores recorded their inputs (no provenance in "
                f"{META_FILE}), so resuming it cannot be checked; use a new --out"
            )
        diff = old.differences(meta)
        if diff:
            raise StoreError(
                f"{root}: exists, made from other inputs or settings: {'; '.join(diff)}; "
                "use a new --out (or delete this one to start over)"
            )
    else:
        meta.save(root)
