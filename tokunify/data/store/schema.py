"""The column schema of a store shard, and :class:`Record`, the row it holds.

Every column is one :class:`Column` here: its Arrow type, how a :class:`Record` fills it and how it
fills a :class:`Record` back. The writer and the reader both walk :func:`columns`, so adding a
column is one entry in ``FIXED`` (plus a ``Record`` field and, when it comes from the manifest, one
line in :func:`record_from_entry`), all in this file.

Columns: ``id``, ``speaker``, ``text``, ``audio``, ``start``, ``end``, ``seconds``, ``meta`` (JSON of
extra manifest fields), ``words`` (list<struct<word, start, end>>), ``text_ids`` (list<uint32>, when
the store has a text tokenizer), and per speech stream ``stream.NAME`` (list<uint32>; codec codes
flattened codebook-major, ``[n_q * T]``) and ``durations.NAME`` (run lengths of deduplicated units).
Any Parquet reader (pyarrow, pandas, ``datasets``) opens the shards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from tokunify.data.manifest import Entry
from tokunify.data.store.layout import StoreMeta


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


def record_from_entry(
    e: Entry,
    seconds: float,
    text_ids: np.ndarray | None,
    streams: dict[str, np.ndarray],
    durations: dict[str, np.ndarray],
) -> Record:
    """The record of a tokenized manifest entry."""
    return Record(
        id=e.id,
        speaker=e.speaker,
        text=e.text,
        seconds=seconds,
        text_ids=text_ids,
        streams=streams,
        durations=durations,
        words=[tuple(w) for w in e.words] if e.words else None,
        meta=dict(e.extra) if e.extra else {},
        audio=str(e.audio),
        start=e.start,
        end=e.end,
    )


U32 = pa.list_(pa.uint32())
WORD = pa.list_(pa.struct([("word", pa.string()), ("start", pa.float32()), ("end", pa.float32())]))


@dataclass(frozen=True)
class Column:
    """One shard column: ``put`` reads it off a record, ``take`` puts the decoded value back."""

    name: str
    type: pa.DataType
    put: Callable[[Record], Any]
    take: Callable[[Record, Any], None]

    @property
    def is_list(self) -> bool:
        return self.type == U32


def _set(attr: str, conv: Callable[[Any], Any] = lambda v: v) -> Callable[[Record, Any], None]:
    def take(r: Record, v: Any) -> None:
        setattr(r, attr, conv(v) if v is not None else None)

    return take


FIXED: list[Column] = [
    Column("id", pa.string(), lambda r: r.id, _set("id")),
    Column("speaker", pa.string(), lambda r: r.speaker, _set("speaker")),
    Column("text", pa.string(), lambda r: r.text, _set("text")),
    Column("audio", pa.string(), lambda r: r.audio, _set("audio")),
    Column("start", pa.float64(), lambda r: r.start, _set("start")),
    Column("end", pa.float64(), lambda r: r.end, _set("end")),
    Column("seconds", pa.float32(), lambda r: r.seconds, _set("seconds", float)),
    Column("meta", pa.string(), lambda r: json.dumps(r.meta) if r.meta else None,
           lambda r, v: setattr(r, "meta", json.loads(v) if v else {})),
    Column("words", WORD,
           lambda r: [{"word": w, "start": s, "end": t} for w, s, t in r.words] if r.words else None,
           lambda r, v: setattr(r, "words", [(w["word"], w["start"], w["end"]) for w in v] if v else None)),
]  # fmt: skip
TEXT_IDS = Column("text_ids", U32, lambda r: r.text_ids, _set("text_ids"))


def stream_columns(name: str, kind: str, num_codebooks: int, dedup: bool) -> list[Column]:
    """``stream.NAME`` (codec ``[n_q, T]`` stored flat, codebook-major) and ``durations.NAME``."""

    def put_ids(r: Record) -> np.ndarray:
        return r.streams[name].reshape(-1)

    def take_ids(r: Record, v: np.ndarray | None) -> None:
        if v is not None:
            r.streams[name] = v.reshape(num_codebooks, -1) if kind == "codec" else v

    def take_durations(r: Record, v: np.ndarray | None) -> None:
        if v is not None:
            r.durations[name] = v

    cols = [Column("stream." + name, U32, put_ids, take_ids)]
    if dedup:
        cols.append(Column("durations." + name, U32, lambda r: r.durations[name], take_durations))
    return cols


def columns(meta: StoreMeta) -> list[Column]:
    """The columns of every shard of a store, in order."""
    cols = list(FIXED)
    if meta.text_tokenizer:
        cols.append(TEXT_IDS)
    for name, info in meta.streams.items():
        cols += stream_columns(name, info.kind, info.num_codebooks, info.dedup)
    return cols


def to_table(records: list[Record], meta: StoreMeta) -> pa.Table:
    """Records -> one shard table (ids as uint32 lists)."""
    return pa.table(
        {c.name: pa.array([c.put(r) for r in records], c.type) for c in columns(meta)},
        schema=pa.schema([(c.name, c.type) for c in columns(meta)]),
    )


def empty_record() -> Record:
    return Record(id="", speaker=None, text=None, seconds=0.0, text_ids=None, streams={},
                  durations={}, words=None)  # fmt: skip
