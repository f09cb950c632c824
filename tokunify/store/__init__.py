"""The token store: Parquet shards of per-utterance *local* ids ("tokenize once, format many").

The store owns its format. :mod:`~tokunify.store.layout` names the files and holds ``store.json``;
:mod:`~tokunify.store.schema` holds the column schema and :class:`Record`;
:mod:`~tokunify.store.writer` publishes a chunk; :mod:`~tokunify.store.reader` reads a store;
:mod:`~tokunify.store.commands` merges and inspects stores.
"""

from tokunify.store.layout import (
    META_FILE,
    STORE_FORMAT,
    STORE_VERSION,
    StoreError,
    StoreMeta,
    StreamInfo,
    done_chunks,
    is_done,
    open_or_create,
    rows_digest,
    shard_file,
    shard_name,
)
from tokunify.store.reader import TokenStore, shuffled_order
from tokunify.store.schema import Record, record_from_entry
from tokunify.store.writer import Reject, write_chunk

__all__ = [
    "META_FILE",
    "STORE_FORMAT",
    "STORE_VERSION",
    "Record",
    "Reject",
    "StoreError",
    "StoreMeta",
    "StreamInfo",
    "TokenStore",
    "done_chunks",
    "is_done",
    "open_or_create",
    "record_from_entry",
    "rows_digest",
    "shard_file",
    "shard_name",
    "shuffled_order",
    "write_chunk",
]
