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
from collections.abc import Callable, Iterator
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
        audio=path if path.is_absolute() else (base / path).absolute(),
        start=float(start) if start not in (None, "") else None,
        end=float(end) if end not in (None, "") else None,
        text=row.get("text"),
        speaker=None if row.get("speaker") in (None, "") else str(row["speaker"]),
        words=[(str(w), float(s), float(e)) for w, s, e in words] if words else None,
        extra={k: v for k, v in row.items() if k not in known},
    )


def read_manifest(path: str | Path, on_error: OnError | None = None) -> Iterator[Entry]:
    """Yield entries of a ``.jsonl`` or ``.tsv`` manifest.

    A malformed row (bad JSON, bytes that are not UTF-8, missing ``id``/``audio``) raises a
    :class:`ManifestError` naming file and line, or, with ``on_error``, is reported as
    ``on_error(where, id_or_None, reason)`` and skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{p}: manifest not found")
    if p.name.endswith(".jsonl.gz"):
        yield from read_lhotse(p)
        return
    base = p.parent
    header: list[str] | None = None
    with p.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            where = f"{p}:{i}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _fail(on_error, where, _guess_id(raw), f"not UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                if p.suffix == ".tsv":
                    cells = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"))
                    if header is None:
                        header = cells
                        continue
                    row: dict[str, Any] = dict(zip(header, cells, strict=False))
                else:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ManifestError(f"{where}: a row must be a JSON object")
                yield _entry(row, base, where)
            except (json.JSONDecodeError, ManifestError, ValueError, TypeError) as e:
                msg = str(e) if isinstance(e, ManifestError) else f"{where}: malformed row ({e})"
                _fail(on_error, where, _guess_id(raw), msg)


OnError = Callable[[str, "str | None", str], None]


def _fail(on_error: OnError | None, where: str, row_id: str | None, reason: str) -> None:
    if on_error is None:
        raise ManifestError(reason if reason.startswith(where) else f"{where}: {reason}")
    on_error(where, row_id, reason)


def _guess_id(raw: bytes) -> str | None:
    """The id of a malformed row, when it can be read exactly: undecodable bytes are carried as
    surrogates (never replaced) and an id holding any of them is no id."""
    text = raw.decode("utf-8", "surrogateescape")
    try:
        row = json.loads(text)
        found = str(row["id"]) if isinstance(row, dict) and "id" in row else None
    except json.JSONDecodeError:
        found = text.split("\t", 1)[0] or None
    if found is None:
        return None
    try:
        found.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return found


def read_lhotse(path: str | Path) -> Iterator[Entry]:
    """Entries of a lhotse CutSet manifest (``cuts.jsonl.gz``); needs ``pip install tokunify[lhotse]``.

    Each cut's first audio source, offset and duration become ``audio``/``start``/``end``; the texts of
    its supervisions are joined; word alignments (``alignment["word"]``) become ``words``, relative
    to the cut's start like every ``words`` field here.
    """
    try:
        from lhotse import CutSet, load_manifest
    except ImportError as e:
        raise ManifestError(
            f"{path}: reading lhotse manifests needs `pip install tokunify[lhotse]`"
        ) from e
    cuts = load_manifest(str(path))
    if not isinstance(cuts, CutSet):
        raise ManifestError(
            f"{path}: a lhotse {type(cuts).__name__}, not a CutSet; "
            "`tokunify prepare` reads it (with its SupervisionSet) into a manifest"
        )
    for cut in cuts:
        rec = cut.recording
        if rec is None or not rec.sources:
            raise ManifestError(f"{path}: cut {cut.id} has no recording source")
        src = rec.sources[0]
        if src.type != "file":
            raise ManifestError(
                f"{path}: cut {cut.id}: only file sources are supported, got {src.type!r}"
            )
        sups = list(cut.supervisions)
        words = None
        ali = (sups[0].alignment or {}).get("word") if sups else None
        if ali:
            words = [
                (
                    a.symbol,
                    round(a.start - cut.start, 4),
                    round(a.start + a.duration - cut.start, 4),
                )
                for a in ali
            ]
        yield Entry(
            id=cut.id,
            audio=Path(src.source),
            start=float(cut.start),
            end=float(cut.start + cut.duration),
            text=" ".join(s.text for s in sups if s.text) or None,
            speaker=sups[0].speaker if sups else None,
            words=words,
        )


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
