"""Importers: corpus layouts people have -> tokunify manifest rows (`tokunify prepare`).

One :class:`~tokunify.data.importers.base.Importer` per layout, registered from the one list below;
:func:`detect` picks the layout of a source, :func:`import_rows` reads it (ids made unique, text
normalised, every unusable row a reject with its reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tokunify.core.textnorm import normalize
from tokunify.data.importers import (
    commonvoice,
    folder,
    hf,
    kaldi,
    lhotse,
    librispeech,
    ljspeech,
    nemo,
)
from tokunify.data.importers.base import Importer, ImportOptions, Row, SourceError, reject_summary
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

IMPORTERS: dict[str, Importer] = {
    imp.name: imp
    for imp in (
        librispeech.IMPORTER,
        folder.IMPORTER,
        kaldi.IMPORTER,
        nemo.IMPORTER,
        lhotse.IMPORTER,
        hf.IMPORTER,
        commonvoice.IMPORTER,
        ljspeech.IMPORTER,
    )
}

TEXT_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": lambda t: t,
    "lower": str.lower,
    "whisper": normalize,  # the normaliser eval scores with
}

__all__ = [
    "IMPORTERS",
    "TEXT_NORMALIZERS",
    "ImportOptions",
    "Importer",
    "SourceError",
    "detect",
    "get_importer",
    "import_rows",
    "is_foreign",
    "reject_summary",
]


def get_importer(name: str) -> Importer:
    if name not in IMPORTERS:
        raise SourceError(f"unknown format {name!r}; known: {', '.join(IMPORTERS)}")
    return IMPORTERS[name]


def detect(src: Path) -> Importer:
    """The one importer whose layout ``src`` has; :class:`SourceError` for none or several."""
    if not src.exists():
        raise SourceError(f"{src}: not found")
    found = [imp for imp in IMPORTERS.values() if imp.detect(src)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceError(
            f"{src}: no known layout detected; give --format ({', '.join(IMPORTERS)})"
        )
    names = ", ".join(i.name for i in found)
    raise SourceError(f"{src}: looks like several layouts ({names}); choose one with --format")


def is_foreign(src: Path) -> bool:
    """Whether ``src`` needs an importer: a directory, a ``.gz`` manifest, or a JSONL file that one
    of the importers recognises (a tokunify JSONL/TSV manifest does not)."""
    if src.is_dir() or src.name.endswith(".gz"):
        return True
    return src.is_file() and src.suffix != ".tsv" and any(i.detect(src) for i in IMPORTERS.values())


def import_rows(
    src: Path, importer: Importer, opts: ImportOptions, text_normalize: str = "none"
) -> Iterator[Row]:
    """The importer's rows with transcripts normalised and repeated ids rejected."""
    norm = TEXT_NORMALIZERS[text_normalize]
    seen: set[str] = set()
    for row in importer.rows(src, opts):
        if isinstance(row, Entry):
            if row.id in seen:
                yield Reject(
                    row.id, str(row.audio), f"{row.id}: duplicate id (an earlier row has it)"
                )
                continue
            seen.add(row.id)
            if row.text is not None:
                row.text = norm(row.text)
        yield row
