"""Corpus manifests: JSONL or TSV rows of ``id, audio[, start, end], text, speaker[, words]``.

JSONL::

    {"id": "u1", "audio": "wavs/u1.wav", "text": "hello there", "speaker": "m3",
     "words": [["hello", 0.12, 0.40], ["there", 0.45, 0.80]]}

``audio`` may also be ``{"path": ..., "start": s, "end": s}``. TSV has a header line naming the
columns (``id audio text speaker start end``); ``words`` is JSON in its column. Relative audio
paths are relative to the manifest's directory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ManifestError(ValueError):
    pass


@dataclass
class Entry:
    id: str
    audio: Path
    start: float | None = None
    end: float | None = None
    text: str | None = None
    speaker: str | None = None
    words: list[tuple[str, float, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _entry(row: dict[str, Any], base: Path, where: str) -> Entry:
    if "id" not in row or "audio" not in row:
        raise ManifestError(f"{where}: a row needs 'id' and 'audio'")
    audio = row["audio"]
    start, end = row.get("start"), row.get("end")
    if isinstance(audio, dict):
        start, end, audio = audio.get("start", start), audio.get("end", end), audio.get("path")
        if audio is None:
            raise ManifestError(f"{where}: 'audio' object needs a 'path'")
    path = Path(audio)
    words = row.get("words")
    if isinstance(words, str) and words:
        words = json.loads(words)
    known = {"id", "audio", "start", "end", "text", "speaker", "words"}
    return Entry(
        id=str(row["id"]),
        audio=path if path.is_absolute() else base / path,
        start=float(start) if start not in (None, "") else None,
        end=float(end) if end not in (None, "") else None,
        text=row.get("text"),
        speaker=None if row.get("speaker") in (None, "") else str(row["speaker"]),
        words=[(str(w), float(s), float(e)) for w, s, e in words] if words else None,
        extra={k: v for k, v in row.items() if k not in known},
    )


def read_manifest(path: str | Path) -> Iterator[Entry]:
    """Yield entries of a ``.jsonl`` or ``.tsv`` manifest; malformed rows raise naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: manifest not found")
    base = p.parent
    if p.suffix == ".tsv":
        with p.open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f, delimiter="\t"), start=2):
                yield _entry(row, base, f"{p}:{i}")
        return
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{p}:{i}: not valid JSON ({e})") from e
            yield _entry(row, base, f"{p}:{i}")


def write_manifest(entries: list[Entry], path: str | Path) -> Path:
    """Write entries as JSONL (audio paths relative to the manifest's directory when possible)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for e in entries:
            try:
                audio = str(e.audio.relative_to(p.parent))
            except ValueError:
                audio = str(e.audio)
            row: dict[str, Any] = {"id": e.id, "audio": audio}
            for k in ("start", "end", "text", "speaker"):
                if getattr(e, k) is not None:
                    row[k] = getattr(e, k)
            if e.words:
                row["words"] = [list(w) for w in e.words]
            row.update(e.extra)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return p
