"""Common Voice: ``validated.tsv`` (else ``train.tsv``) or a given ``.tsv``, with ``clips/``.

Columns ``client_id`` (the speaker), ``path`` (a file in ``clips/``) and ``sentence``; the id is
the clip's stem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokunify.data.importers.base import Importer, ImportOptions, Row, audio_reject, csv_rows
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

_TABLES = ("validated.tsv", "train.tsv")


def _table(src: Path) -> Path | None:
    if src.is_file() and src.suffix == ".tsv" and (src.parent / "clips").is_dir():
        return src
    if src.is_dir() and (src / "clips").is_dir():
        return next((p for n in _TABLES if (p := src / n).is_file()), None)
    return None


def detect(src: Path) -> bool:
    table = _table(src)
    if table is None:
        return False
    with table.open("rb") as f:
        header = f.readline().split(b"\t")
    return b"path" in header and b"sentence" in [h.strip() for h in header]


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """One row per table line, in order."""
    table = _table(src)
    assert table is not None
    clips = table.parent / "clips"
    for where, row in csv_rows(table, "\t"):
        if isinstance(row, ValueError):
            yield Reject(None, None, str(row))
            continue
        name = row.get("path") or ""
        utt = Path(name).stem or None
        if not name or row.get("sentence") is None:
            yield Reject(utt, None, f"{where}: missing path or sentence")
            continue
        audio = clips / name
        if (bad := audio_reject(utt, audio, where)) is not None:
            yield bad
            continue
        yield Entry(
            id=str(utt), audio=audio, text=row["sentence"], speaker=row.get("client_id") or None
        )


IMPORTER = Importer(
    name="commonvoice",
    description="Common Voice (validated.tsv / train.tsv + clips/)",
    detect=detect,
    rows=rows,
    example="tokunify prepare cv-corpus-17.0/en --out train.jsonl",
)
