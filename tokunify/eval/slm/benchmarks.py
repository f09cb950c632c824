"""Readers of the published likelihood-benchmark layouts, from a local directory (nothing is downloaded).

Every reader returns :class:`Pair` lists; one registry maps a benchmark name to its reader.

- ``swuggy`` (ZeroSpeech 2021 lexical): ``DIR/lexical/{dev,test}/*.wav`` and ``gold.csv`` with columns
  ``filename,id,voice,frequency,word,phones,length,correct``. A word and its non-word share ``id``
  and ``voice``; a pair's key is its ``id`` (ZeroSpeech's lexical evaluator averages by ``id``).
  ``frequency`` is the word's LibriSpeech count: 0 is the OOV band, >= 1 in-vocabulary.
- ``sblimp`` (ZeroSpeech 2021 syntactic): ``DIR/syntactic/{dev,test}/*.wav`` and ``gold.csv`` with
  ``filename,id,voice,type,subtype,transcription,correct``; ids repeat across subtypes, so a pair's
  key is ``type/subtype/id`` (the syntactic evaluator groups by these three); reported by ``type``
  (the phenomenon).

A ``gold.csv`` with two correct (or two incorrect) rows for one key and voice is refused, naming the
row: one would silently replace the other.
- ``sstorycloze`` / ``tstorycloze`` (the released sSC/tSC directories): ``{n}_correct*.wav`` and
  ``{n}_incorrect*.wav``. An optional ``texts.jsonl`` (``{"id", "context", "correct",
  "incorrect"}``) and ``crossmodal/{n}_{context,correct,incorrect}.wav`` (the context and the
  endings spoken alone) enable the cross-modal variants.
- ``salmon``: ``DIR/<task>/*.wav``, one directory per task (``bg_alignment``, ``gender_consistency``,
  ...); the second ``_`` field of a file name is the sample index. Within a sample the file whose
  name says ``pos``/``positive`` is the positive; otherwise, as the SALMon reference code does, the
  first in sorted order.

Scores follow ZeroSpeech: a pair's score is averaged over its voices (same ``key``), then over keys.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class BenchmarkError(ValueError):
    """A benchmark directory does not have the expected layout."""


@dataclass
class Pair:
    """One positive/negative item pair. ``key`` groups voices of one pair; ``groups`` label it."""

    key: str
    pos: Path
    neg: Path
    groups: dict[str, str] = field(default_factory=dict)
    pos_text: str | None = None
    neg_text: str | None = None
    context_text: str | None = None
    context_audio: Path | None = None  # cross-modal: the context spoken alone
    pos_ending_audio: Path | None = None  # cross-modal: the endings spoken alone
    neg_ending_audio: Path | None = None


def _split_dir(data: Path, sub: str, split: str) -> Path:
    """``DIR/sub/split`` (the ZeroSpeech root) or ``DIR`` itself when it holds ``gold.csv``."""
    for d in (data / sub / split, data / split, data):
        if (d / "gold.csv").is_file():
            return d
    raise BenchmarkError(f"{data}: no {sub}/{split}/gold.csv (ZeroSpeech 2021 layout)")


Row = tuple[int, dict[str, str]]  # (line in gold.csv, row)


def _gold(d: Path, required: set[str]) -> list[Row]:
    path = d / "gold.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [(reader.line_num, r) for r in reader]
    missing = required - set(reader.fieldnames or ())
    if missing:
        raise BenchmarkError(f"{path}: missing columns {sorted(missing)}")
    return rows


def _pairs_by(
    rows: list[Row], d: Path, source: Path, key: tuple[str, ...]
) -> list[tuple[str, dict, dict]]:
    """Rows grouped on ``key`` columns + ``voice`` into ``(key, correct, incorrect)``; the key
    joins the ``key`` columns with ``/``. A second correct (or incorrect) row of a group is refused."""
    groups: dict[tuple[str, ...], dict[str, Row]] = {}
    for line, r in rows:
        side = "pos" if str(r["correct"]).strip() in ("1", "True", "true") else "neg"
        g = groups.setdefault((*(r[k] for k in key), r.get("voice", "")), {})
        if side in g:
            what = ", ".join(f"{k} {r[k]!r}" for k in (*key, "voice") if k in r)
            raise BenchmarkError(
                f"{source}: line {line} repeats the {'correct' if side == 'pos' else 'incorrect'} "
                f"row of {what} (line {g[side][0]}); each key and voice has one pair"
            )
        g[side] = (line, r)
    out = []
    for k, g in sorted(groups.items()):
        what = ", ".join(f"{c} {v!r}" for c, v in zip((*key, "voice"), k, strict=True))
        if set(g) != {"pos", "neg"}:
            raise BenchmarkError(f"{source}: {what} needs one correct and one incorrect row")
        for _, r in g.values():
            if not (d / f"{r['filename']}.wav").is_file():
                raise BenchmarkError(f"{source}: {r['filename']}.wav is listed but missing in {d}")
        out.append(("/".join(k[:-1]), g["pos"][1], g["neg"][1]))
    return out


def read_swuggy(data: Path, split: str = "") -> list[Pair]:
    d = _split_dir(data, "lexical", split or "dev")
    rows = _gold(d, {"filename", "id", "correct", "frequency"})
    pairs = []
    for key, p, n in _pairs_by(rows, d, d / "gold.csv", ("id",)):
        freq = str(p.get("frequency", "")).strip()
        band = "oov" if freq in ("", "0", "nan", "NaN") else "in_vocab"
        pairs.append(
            Pair(
                key,
                d / f"{p['filename']}.wav",
                d / f"{n['filename']}.wav",
                {"vocab": band},
                p.get("word"),
                n.get("word"),
            )
        )
    return pairs


def read_sblimp(data: Path, split: str = "") -> list[Pair]:
    d = _split_dir(data, "syntactic", split or "dev")
    rows = _gold(d, {"filename", "id", "correct", "type", "subtype"})
    return [
        Pair(
            key,
            d / f"{p['filename']}.wav",
            d / f"{n['filename']}.wav",
            {"type": p["type"]},
            p.get("transcription"),
            n.get("transcription"),
        )
        for key, p, n in _pairs_by(rows, d, d / "gold.csv", ("type", "subtype", "id"))
    ]


_CLOZE = re.compile(r"^(\d+)_(correct|incorrect)")


def read_storycloze(data: Path, split: str = "") -> list[Pair]:
    d = data / split if split and (data / split).is_dir() else data
    found: dict[str, dict[str, Path]] = {}
    for f in sorted(d.glob("*.wav")) + sorted(d.glob("*/*.wav")):
        m = _CLOZE.match(f.name)
        if m and f.parent.name != "crossmodal":
            found.setdefault(m.group(1), {})[m.group(2)] = f
    if not found:
        raise BenchmarkError(
            f"{d}: no <n>_correct.wav / <n>_incorrect.wav files (StoryCloze layout)"
        )
    texts: dict[str, dict] = {}
    if (d / "texts.jsonl").is_file():
        for line in (d / "texts.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                texts[str(row["id"])] = row
    cm = d / "crossmodal"
    pairs = []
    for n, g in sorted(found.items(), key=lambda kv: int(kv[0])):
        if set(g) != {"correct", "incorrect"}:
            raise BenchmarkError(f"{d}: story {n} needs both a correct and an incorrect file")
        t = texts.get(n, {})
        pairs.append(
            Pair(
                n,
                g["correct"],
                g["incorrect"],
                {},
                t.get("correct"),
                t.get("incorrect"),
                t.get("context"),
                *(
                    cm / f"{n}_{k}.wav" if (cm / f"{n}_{k}.wav").is_file() else None
                    for k in ("context", "correct", "incorrect")
                ),
            )
        )
    return pairs


_POS = re.compile(r"(^|_)(pos|positive)(_|$)")


def read_salmon(data: Path, split: str = "") -> list[Pair]:
    tasks = [p for p in sorted(data.iterdir()) if p.is_dir()] if data.is_dir() else []
    if split:
        tasks = [t for t in tasks if t.name == split]
    pairs = []
    for t in tasks:
        samples: dict[int, list[Path]] = {}
        for f in t.glob("*.wav"):
            parts = f.stem.split("_")
            if len(parts) < 2 or not parts[1].isdigit():
                raise BenchmarkError(f"{f}: SALMon file names carry the sample index as field 2")
            samples.setdefault(int(parts[1]), []).append(f)
        for i, files in sorted(samples.items()):
            if len(files) != 2:
                raise BenchmarkError(f"{t}: sample {i} has {len(files)} files, expected 2")
            files.sort()
            if _POS.search(files[1].stem) and not _POS.search(files[0].stem):
                files.reverse()
            pairs.append(Pair(f"{t.name}/{i}", files[0], files[1], {"task": t.name}))
    if not pairs:
        raise BenchmarkError(f"{data}: no SALMon task directories with wavs")
    return pairs


READERS: dict[str, Callable[[Path, str], list[Pair]]] = {
    "swuggy": read_swuggy,
    "sblimp": read_sblimp,
    "sstorycloze": read_storycloze,
    "tstorycloze": read_storycloze,
    "salmon": read_salmon,
}


def read_benchmark(name: str, data: str | Path, split: str = "") -> list[Pair]:
    if name not in READERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {sorted(READERS)}")
    data = Path(data)
    if not data.is_dir():
        raise BenchmarkError(f"{data}: not a directory")
    return READERS[name](data, split)
