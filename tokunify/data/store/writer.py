"""Writing one chunk of a store: shard, rejects, then stats, each atomically, stats last.

A reader or a resumed job therefore sees a chunk either complete or not at all; a killed writer
leaves at most a hidden ``.NAME.tmp-PID`` file, which readers ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokunify.core.fsio import atomic_write, atomic_write_text
from tokunify.data.store.layout import StoreMeta, rejects_file, shard_file, stats_file
from tokunify.data.store.schema import Record, to_table


@dataclass
class Reject:
    """A manifest row that did not make it into the store, and why."""

    id: str | None
    path: str | None
    reason: str

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "path": self.path, "reason": self.reason})


def write_chunk(
    root: str | Path, meta: StoreMeta, chunk: int, records: list[Record], rejects: list[Reject]
) -> dict[str, Any]:
    """Publish chunk ``chunk`` of the store at ``root``; returns its stats."""
    import pyarrow.parquet as pq

    table = to_table(records, meta)
    atomic_write(shard_file(root, chunk), lambda p: pq.write_table(table, p, compression="zstd"))
    atomic_write_text(rejects_file(root, chunk), "".join(r.to_json() + "\n" for r in rejects))
    stats = {
        "chunk": chunk,
        "rows": len(records),
        "rejects": len(rejects),
        "seconds": sum(r.seconds for r in records),
    }
    atomic_write_text(stats_file(root, chunk), json.dumps(stats) + "\n")  # last: marks it done
    return stats
