"""LibriSpeech-style trees: LibriSpeech, MLS and LibriTTS.

- LibriSpeech: ``SPK/CHAPTER/SPK-CHAPTER.trans.txt`` (``ID TEXT`` lines) beside ``ID.flac``;
- MLS: ``transcripts.txt`` (``ID<TAB>TEXT``) beside ``audio/SPK/BOOK/ID.flac`` (or ``.opus``);
- LibriTTS: ``SPK/CHAPTER/ID.wav`` beside ``ID.normalized.txt``.

The speaker is the first ``-``/``_`` field of the utterance id, as in every one of these corpora.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tokunify.data.importers.base import Importer, ImportOptions, Row, read_text, text_lines
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

_AUDIO = (".flac", ".wav", ".opus", ".mp3")


def _speaker(utt: str) -> str:
    return re.split(r"[-_]", utt, maxsplit=1)[0]


def _find_audio(folder: Path, utt: str) -> Path | None:
    return next((p for s in _AUDIO if (p := folder / f"{utt}{s}").is_file()), None)


def detect(src: Path) -> bool:
    if not src.is_dir():
        return False
    if (src / "transcripts.txt").is_file() and (src / "audio").is_dir():
        return True
    return any(next(src.rglob(pattern), None) is not None
               for pattern in ("*.trans.txt", "*.normalized.txt"))  # fmt: skip


def _entry(utt: str, audio: Path | None, text: str, where: str) -> Row:
    if audio is None:
        return Reject(utt, None, f"{where}: audio file not found for {utt}")
    return Entry(id=utt, audio=audio, text=text, speaker=_speaker(utt))


def _transcript_lines(
    path: Path, sep: str | None
) -> Iterator[tuple[str, str | None, str] | Reject]:
    for where, line in text_lines(path):
        if isinstance(line, ValueError):
            yield Reject(None, None, str(line))
            continue
        utt, _, text = line.partition("\t" if sep == "\t" else " ")
        yield utt.strip(), where, text.strip()


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """LibriSpeech/LibriTTS transcripts in path order, MLS in ``transcripts.txt`` order; audio with
    no transcript line is rejected too."""
    listed: set[Path] = set()
    if (src / "transcripts.txt").is_file() and (src / "audio").is_dir():  # MLS
        for item in _transcript_lines(src / "transcripts.txt", "\t"):
            if isinstance(item, Reject):
                yield item
                continue
            utt, where, text = item
            parts = utt.split("_")
            folder = src / "audio" / parts[0] / (parts[1] if len(parts) > 2 else "")
            audio = _find_audio(folder, utt)
            if audio is not None:
                listed.add(audio)
            yield _entry(utt, audio, text, str(where))
        audio_root = src / "audio"
    else:
        for trans in sorted(src.rglob("*.trans.txt")):
            for item in _transcript_lines(trans, " "):
                if isinstance(item, Reject):
                    yield item
                    continue
                utt, where, text = item
                audio = _find_audio(trans.parent, utt)
                if audio is not None:
                    listed.add(audio)
                yield _entry(utt, audio, text, str(where))
        for norm in sorted(src.rglob("*.normalized.txt")):
            utt = norm.name.removesuffix(".normalized.txt")
            audio = _find_audio(norm.parent, utt)
            if audio is not None:
                listed.add(audio)
            try:
                yield _entry(utt, audio, read_text(norm), str(norm))
            except ValueError as e:
                yield Reject(utt, str(audio) if audio else None, str(e))
        audio_root = src
    for p in sorted(x for s in _AUDIO for x in audio_root.rglob(f"*{s}")):
        if p not in listed:
            yield Reject(p.stem, str(p), f"{p}: no transcript line for this audio file")


IMPORTER = Importer(
    name="librispeech",
    description="LibriSpeech / MLS / LibriTTS trees (SPK/CHAPTER/*.flac + *.trans.txt)",
    detect=detect,
    rows=rows,
    example="tokunify prepare LibriSpeech/train-clean-100 --out train.jsonl",
)
