"""LJSpeech: ``metadata.csv`` (``ID|transcription|normalized transcription``, no header) + ``wavs/``.

The normalized transcription is used when present. One speaker, so no speaker id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokunify.data.importers.base import Importer, ImportOptions, Row, audio_reject, text_lines
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject


def detect(src: Path) -> bool:
    meta = src / "metadata.csv"
    if not (src.is_dir() and meta.is_file() and (src / "wavs").is_dir()):
        return False
    with meta.open("rb") as f:
        return f.readline().count(b"|") >= 1


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """One row per ``metadata.csv`` line, in order."""
    for where, line in text_lines(src / "metadata.csv"):
        if isinstance(line, ValueError):
            yield Reject(None, None, str(line))
            continue
        fields = line.split("|")
        utt = fields[0].strip()
        text = next((t.strip() for t in reversed(fields[1:3]) if t.strip()), None)
        if len(fields) < 2 or text is None:
            yield Reject(utt or None, None, f"{where}: missing transcript")
            continue
        audio = src / "wavs" / f"{utt}.wav"
        if (bad := audio_reject(utt, audio, where)) is not None:
            yield bad
            continue
        yield Entry(id=utt, audio=audio, text=text)


IMPORTER = Importer(
    name="ljspeech",
    description="LJSpeech (metadata.csv with ID|text|normalized + wavs/)",
    detect=detect,
    rows=rows,
    example="tokunify prepare LJSpeech-1.1 --out train.jsonl",
)
