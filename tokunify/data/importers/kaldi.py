"""A Kaldi data directory: ``wav.scp``, ``text``, optional ``utt2spk`` and ``segments``.

``wav.scp`` lines must be ``RECORDING PATH``; a piped command (``... |``) or an archive offset
(``ark:...``) is refused with a line naming the row (run it once into files, e.g. with
``wav-copy`` or ``sox``). With ``segments`` (``UTT RECORDING START END``) each utterance is a span
of its recording; without it the utterance id is the recording id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tokunify.data.importers.base import Importer, ImportOptions, Row, resolve, text_lines
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

_ARCHIVE = re.compile(r"^(ark|scp):|\.ark:\d+$")


def detect(src: Path) -> bool:
    return src.is_dir() and (src / "wav.scp").is_file() and (src / "text").is_file()


def _table(path: Path, rejects: list[Reject]) -> dict[str, tuple[str, str]]:
    """``KEY REST`` lines -> {key: (rest, where)}; undecodable lines become rejects."""
    out: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return out
    for where, line in text_lines(path):
        if isinstance(line, ValueError):
            rejects.append(Reject(None, None, str(line)))
            continue
        key, _, rest = line.strip().partition(" ")
        out[key] = (rest.strip(), where)
    return out


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """One row per ``text`` line (utterance), in ``text`` order."""
    rejects: list[Reject] = []
    wavs = _table(src / "wav.scp", rejects)
    texts = _table(src / "text", rejects)
    spk = _table(src / "utt2spk", rejects)
    segs = _table(src / "segments", rejects)
    yield from rejects
    bad_rec: dict[str, str] = {}
    for rec, (value, where) in wavs.items():
        if value.endswith("|"):
            bad_rec[rec] = (
                f"{where}: recording {rec}: piped wav.scp command is not supported ({value!r}); write the audio to files first"
            )
        elif _ARCHIVE.search(value):
            bad_rec[rec] = (
                f"{where}: recording {rec}: archive entry is not supported ({value!r}); write the audio to files first"
            )
    for utt, (text, where) in texts.items():
        if segs:
            if utt not in segs:
                yield Reject(utt, None, f"{where}: {utt} has no line in segments")
                continue
            fields, seg_where = segs[utt][0].split(), segs[utt][1]
            if len(fields) != 3:
                yield Reject(utt, None, f"{seg_where}: expected 'UTT RECORDING START END'")
                continue
            rec = fields[0]
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                yield Reject(utt, None, f"{seg_where}: start/end are not numbers")
                continue
        else:
            rec, start, end = utt, None, None
        if rec in bad_rec:
            yield Reject(utt, wavs[rec][0], bad_rec[rec])
            continue
        if rec not in wavs:
            yield Reject(utt, None, f"{where}: recording {rec} of {utt} is not in wav.scp")
            continue
        audio = resolve(wavs[rec][0], src)
        if not audio.is_file():
            yield Reject(utt, str(audio), f"{wavs[rec][1]}: audio file not found ({audio})")
            continue
        speaker = spk[utt][0] if utt in spk else None
        yield Entry(id=utt, audio=audio, start=start, end=end, text=text, speaker=speaker)
    for rec, (value, where) in wavs.items():
        if not segs and rec not in texts:
            yield Reject(rec, value, f"{where}: recording {rec} has no line in text")


IMPORTER = Importer(
    name="kaldi",
    description="a Kaldi data dir (wav.scp with file paths, text, utt2spk, optional segments)",
    detect=detect,
    rows=rows,
    example="tokunify prepare data/train --out train.jsonl --format kaldi",
)
