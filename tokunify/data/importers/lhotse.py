"""lhotse manifests through lhotse's own loaders (extra ``[lhotse]``): a CutSet, or a RecordingSet
with its SupervisionSet, as ``.jsonl`` or ``.jsonl.gz``.

``SRC`` is a cuts file, a recordings file (its supervisions file is the same name with
``recordings`` -> ``supervisions``), or a folder holding such files. Every supervision becomes one
row (its span, text, speaker and word alignment); a cut without supervisions is one row without text. Only
``file`` audio sources can be read; others are rejected naming the recording.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokunify.data.importers.base import Importer, ImportOptions, Row, SourceError, first_json
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

_SUFFIXES = (".jsonl", ".jsonl.gz")


def _kind(path: Path) -> str | None:
    """``cuts``, ``recordings`` or ``supervisions`` from a manifest's first row, else None."""
    if not path.is_file() or not path.name.endswith(_SUFFIXES):
        return None
    row = first_json(path)
    if row is None:
        return None
    if "recording" in row or row.get("type") in ("MonoCut", "MultiCut", "MixedCut"):
        return "cuts"
    if "sources" in row and "sampling_rate" in row:
        return "recordings"
    if "recording_id" in row and "duration" in row and "start" in row:
        return "supervisions"
    return None


def _sets(src: Path) -> list[tuple[Path, Path | None]]:
    """(cuts file, None) or (recordings file, supervisions file) pairs to read."""
    files = sorted(p for p in src.iterdir() if _kind(p)) if src.is_dir() else [src]
    out: list[tuple[Path, Path | None]] = []
    for f in files:
        kind = _kind(f)
        if kind == "cuts":
            out.append((f, None))
        elif kind == "recordings":
            sup = f.with_name(f.name.replace("recordings", "supervisions"))
            if sup == f or _kind(sup) != "supervisions":
                raise SourceError(f"{f}: a RecordingSet needs its SupervisionSet at {sup}")
            out.append((f, sup))
    return out


def detect(src: Path) -> bool:
    if src.is_dir():
        return any(_kind(p) in ("cuts", "recordings") for p in src.iterdir())
    return _kind(src) in ("cuts", "recordings")


def _load(path: Path) -> Any:
    try:
        from lhotse import load_manifest  # optional extra: tokunify[lhotse]
    except ImportError:
        raise SourceError(
            f"{path}: reading lhotse manifests needs `pip install tokunify[lhotse]`"
        ) from None
    return load_manifest(path)


def _audio(rec: Any, where: str) -> Path | Reject:
    src = rec.sources[0] if rec.sources else None
    if src is None or src.type != "file":
        kind = src.type if src is not None else "no"
        return Reject(
            rec.id,
            None,
            f"{where}: recording {rec.id} has a {kind!r} audio source; only files can be read",
        )
    path = Path(src.source)
    if not path.is_file():
        return Reject(rec.id, str(path), f"{where}: audio file not found ({path})")
    return path


def _sup_entry(sup: Any, audio: Path, offset: float, limit: float) -> Entry:
    """A supervision as a row; ``offset`` is where its times count from in the recording (the
    cut's start, or 0). Word alignments become ``words``, relative to the row's start."""
    start = max(offset + sup.start, offset)
    end = min(offset + sup.start + sup.duration, limit)
    ali = (sup.alignment or {}).get("word")
    words = [(a.symbol, round(offset + a.start - start, 4), round(offset + a.end - start, 4))
             for a in ali] if ali else None  # fmt: skip
    return Entry(id=sup.id, audio=audio, start=round(start, 6), end=round(end, 6),
                 text=sup.text, speaker=sup.speaker, words=words)  # fmt: skip


def _cut_rows(path: Path) -> Iterator[Row]:
    for cut in _load(path):
        where = f"{path}: cut {cut.id}"
        rec = getattr(cut, "recording", None)
        if rec is None:
            yield Reject(
                cut.id, None, f"{where}: no single recording (mixed cuts are not supported)"
            )
            continue
        audio = _audio(rec, where)
        if isinstance(audio, Reject):
            yield Reject(cut.id, audio.path, audio.reason)
            continue
        sups = list(cut.supervisions)
        if not sups:
            yield Entry(id=cut.id, audio=audio, start=cut.start, end=cut.start + cut.duration)
        for sup in sups:
            yield _sup_entry(sup, audio, cut.start, cut.start + cut.duration)


def _pair_rows(recs_path: Path, sups_path: Path) -> Iterator[Row]:
    recs = _load(recs_path)
    audio = {r.id: _audio(r, str(recs_path)) for r in recs}
    seen: set[str] = set()
    for sup in _load(sups_path):
        seen.add(sup.recording_id)
        a = audio.get(sup.recording_id)
        if a is None:
            yield Reject(
                sup.id,
                None,
                f"{sups_path}: supervision {sup.id}: recording {sup.recording_id} is not in {recs_path.name}",
            )
        elif isinstance(a, Reject):
            yield Reject(sup.id, a.path, a.reason)
        else:
            yield _sup_entry(sup, a, 0.0, recs[sup.recording_id].duration)
    for rid in audio:
        if rid not in seen:
            yield Reject(rid, None, f"{recs_path}: recording {rid} has no supervision")


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """Every supervision of every set, in file order."""
    for main, sups in _sets(src):
        yield from _cut_rows(main) if sups is None else _pair_rows(main, sups)


IMPORTER = Importer(
    name="lhotse",
    description="lhotse CutSet or RecordingSet + SupervisionSet (.jsonl/.jsonl.gz; extra [lhotse])",
    detect=detect,
    rows=rows,
    example="tokunify prepare librispeech_cuts_train.jsonl.gz --out train.jsonl",
)
