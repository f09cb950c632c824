"""The token store: Parquet shards of per-utterance *local* ids ("tokenize once, format many").

The store owns its format. :mod:`~tokunify.data.store.layout` names the files and holds ``store.json``;
:mod:`~tokunify.data.store.schema` holds the column schema and :class:`Record`;
:mod:`~tokunify.data.store.writer` publishes a chunk; :mod:`~tokunify.data.store.reader` reads a store;
:mod:`~tokunify.tokenize.store_commands` merges and inspects stores.
"""

from tokunify.data.store.layout import (
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
from tokunify.data.store.reader import TokenStore, shuffled_order
from tokunify.data.store.schema import Record, record_from_entry
from tokunify.data.store.writer import Reject, write_chunk

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
