"""What every importer shares: the :class:`Importer` object, row rejects, and careful file reading.

An importer turns one corpus layout into tokunify manifest rows. It yields, in source order, an
:class:`~tokunify.data.manifest.Entry` per usable row and a :class:`~tokunify.data.store.Reject` (id, audio
path, reason naming the file and line) per unusable one, so nothing read is lost silently.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif", ".sph")
"""Audio files the folder-style importers look for (what soundfile/libsndfile decode)."""

Row = Entry | Reject


class SourceError(ValueError):
    """A source that cannot be imported at all (one line naming the file and the reason)."""


@dataclass(frozen=True)
class ImportOptions:
    """How rows are made: where embedded audio bytes are written (None: such rows are rejected)."""

    audio_dir: Path | None = None


@dataclass(frozen=True)
class Importer:
    """One corpus layout: ``detect(src)`` says whether ``src`` has it; ``rows(src, opts)`` reads it."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    rows: Callable[[Path, ImportOptions], Iterator[Row]]
    example: str  # the README's command line for this layout


def decode_line(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8, or :class:`ValueError` naming ``where`` (never replacement characters)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None


def text_lines(path: Path) -> Iterator[tuple[str, str | ValueError]]:
    """``(where, line)`` for each non-empty line of a text file (``.gz`` too); a line that is not
    UTF-8 comes as ``(where, ValueError)`` so the caller can reject just that row."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            where = f"{path}:{i}"
            try:
                line = decode_line(raw, where).rstrip("\r\n")
            except ValueError as e:
                yield where, e
                continue
            if line.strip():
                yield where, line


def read_text(path: Path) -> str:
    """A whole transcript file, stripped; :class:`ValueError` naming it when it is not UTF-8."""
    return decode_line(path.read_bytes(), str(path)).strip()


def first_json(path: Path) -> dict[str, Any] | None:
    """The first line of a (gzipped) JSONL file as an object, or None when it is not one."""
    try:
        for _, line in text_lines(path):
            if isinstance(line, ValueError):
                return None
            obj = json.loads(line)
            return obj if isinstance(obj, dict) else None
    except (OSError, json.JSONDecodeError, EOFError):
        return None
    return None


def csv_rows(
    path: Path, delimiter: str, quoting: int = csv.QUOTE_NONE
) -> Iterator[tuple[str, dict[str, str] | ValueError]]:
    """``(where, row)`` of a delimited file with a header line (one row a line); undecodable rows
    as ValueError."""
    header: list[str] | None = None
    for where, line in text_lines(path):
        if isinstance(line, ValueError):
            yield where, line
            continue
        cells = next(csv.reader([line], delimiter=delimiter, quoting=quoting))
        if header is None:
            header = cells
            continue
        yield where, dict(zip(header, cells, strict=False))


def audio_reject(row_id: str | None, audio: Path, where: str) -> Reject | None:
    """A reject when ``audio`` is not a file, else None."""
    if audio.is_file():
        return None
    return Reject(row_id, str(audio), f"{where}: audio file not found ({audio})")


def resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (base / p).absolute()


def reason_kind(reason: str) -> str:
    """A reject reason without its place, details in parentheses and numbers, to count kinds."""
    kind = reason
    while (shorter := re.sub(r"\s*\([^()]*\)", "", kind)) != kind:  # innermost first
        kind = shorter
    kind = kind.rsplit(": ", 1)[-1]
    return re.sub(r"(?<![\w-])\d+(\.\d+)?(?![\w-])", "N", kind).strip()


def reject_summary(read: int, reasons: list[str], rejects_file: str) -> str:
    """One line: rows read and rejected, the three most common kinds of reason, the rejects file."""
    top = Counter(reason_kind(r) for r in reasons).most_common(3)
    common = "; ".join(f"{k} ({n})" for k, n in top) or "none"
    return f"read {read} rows, stored 0, rejected {len(reasons)}; most common: {common}; rejects: {rejects_file}"
