"""NeMo JSONL manifests: ``audio_filepath``, ``text``, ``duration``, optional ``offset``.

With ``offset`` the row is the span ``[offset, offset + duration)`` of its file; without it
``duration`` is kept as the row's ``duration``. The id is the row's ``id``/``utt_id`` when it has
one, else the audio file's stem (``-`` and the offset in milliseconds for spans). Relative paths
are relative to the manifest's folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokunify.data.importers.base import (
    Importer,
    ImportOptions,
    Row,
    audio_reject,
    first_json,
    resolve,
    text_lines,
)
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject


def detect(src: Path) -> bool:
    if not (src.is_file() and src.name.endswith((".json", ".jsonl"))):
        return False
    row = first_json(src)
    return row is not None and "audio_filepath" in row


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """One row per manifest line, in order."""
    for where, line in text_lines(src):
        if isinstance(line, ValueError):
            yield Reject(None, None, str(line))
            continue
        try:
            row = json.loads(line)
            path = row["audio_filepath"]
            duration = float(row["duration"]) if row.get("duration") is not None else None
            offset = float(row["offset"]) if row.get("offset") is not None else None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            yield Reject(None, None, f"{where}: malformed NeMo row ({e!r})")
            continue
        audio = resolve(str(path), src.parent)
        utt = row.get("id") or row.get("utt_id") or audio.stem
        if offset is not None and not (row.get("id") or row.get("utt_id")):
            utt = f"{utt}-{round(offset * 1000):08d}"
        if (bad := audio_reject(str(utt), audio, where)) is not None:
            yield bad
            continue
        start = offset
        end = offset + duration if offset is not None and duration is not None else None
        known = {"audio_filepath", "text", "duration", "offset", "id", "utt_id", "speaker"}
        extra = {k: v for k, v in row.items() if k not in known}
        if offset is None and duration is not None:
            extra["duration"] = duration
        speaker = row.get("speaker")
        yield Entry(id=str(utt), audio=audio, start=start, end=end, text=row.get("text"),
                    speaker=None if speaker is None else str(speaker), extra=extra)  # fmt: skip


IMPORTER = Importer(
    name="nemo",
    description="a NeMo JSONL manifest (audio_filepath, text, duration, optional offset)",
    detect=detect,
    rows=rows,
    example="tokunify prepare train_manifest.json --out train.jsonl --format nemo",
)
