"""A folder of audio files, each with a same-named ``.txt`` (or ``.lab``) transcript, recursively.

``a/b/x.wav`` + ``a/b/x.txt`` -> id ``a/b/x``. An audio file without a transcript is rejected; a
transcript without audio is rejected too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokunify.data.importers.base import AUDIO_SUFFIXES, Importer, ImportOptions, Row, read_text
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

_TEXT = (".txt", ".lab")


def _transcript(audio: Path) -> Path | None:
    return next((t for s in _TEXT if (t := audio.with_suffix(s)).is_file()), None)


def _audio_files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def detect(src: Path) -> bool:
    if not src.is_dir():
        return False
    for p in src.rglob("*"):
        if p.suffix.lower() in AUDIO_SUFFIXES and _transcript(p) is not None:
            return True
    return False


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """One row per audio file, in path order, then a reject per orphan transcript."""
    used: set[Path] = set()
    for audio in _audio_files(src):
        utt = audio.relative_to(src).with_suffix("").as_posix()
        trans = _transcript(audio)
        if trans is None:
            yield Reject(
                utt, str(audio), f"{audio}: missing transcript (no .txt or .lab beside it)"
            )
            continue
        used.add(trans)
        try:
            yield Entry(id=utt, audio=audio, text=read_text(trans))
        except ValueError as e:
            yield Reject(utt, str(audio), str(e))
    for s in _TEXT:
        for t in sorted(src.rglob(f"*{s}")):
            if t not in used and not any(t.with_suffix(a).exists() for a in AUDIO_SUFFIXES):
                yield Reject(t.with_suffix("").relative_to(src).as_posix(), None,
                             f"{t}: transcript without an audio file")  # fmt: skip


IMPORTER = Importer(
    name="folder",
    description="a folder of audio files with same-named .txt/.lab transcripts (recursive)",
    detect=detect,
    rows=rows,
    example="tokunify prepare my_recordings/ --out train.jsonl --format folder",
)
