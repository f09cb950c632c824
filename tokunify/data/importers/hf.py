"""Hugging Face layouts: a dataset written by ``save_to_disk`` and Parquet files with an ``Audio``
column (through ``datasets``, extra ``[hf]``); an ``audiofolder`` directory (``metadata.csv`` /
``metadata.jsonl`` with ``file_name``, also one per split folder) and HF-style JSONL rows
(``path``/``file_name``/``audio`` plus ``sentence``/``text``/``transcription``), read here row by
row, without the extra (``datasets``' own audiofolder loader encodes the audio while it loads,
which needs ``torchcodec``; reading the metadata directly needs nothing and rejects one bad row,
not the whole folder).

Audio is never decoded here (``Audio(decode=False)``): a row's file path is used when it exists;
embedded bytes are written to ``ImportOptions.audio_dir`` (``prepare`` puts them beside the
manifest), or the row is rejected when there is no such folder. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokunify.data.importers.base import (
    Importer,
    ImportOptions,
    Row,
    SourceError,
    csv_rows,
    first_json,
    resolve,
    text_lines,
)
from tokunify.data.manifest import Entry
from tokunify.data.store import Reject

TEXT_KEYS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_text")
SPEAKER_KEYS = ("speaker_id", "speaker", "client_id")
ID_KEYS = ("id", "utt_id", "segment_id", "audio_id", "path_id")
PATH_KEYS = ("audio", "path", "file_name", "file", "audio_path")


def _kind(src: Path) -> str | None:
    if src.is_dir():
        metas = [*src.glob("metadata.csv"), *src.glob("*/metadata.csv")]
        if any(_csv_has_file_name(m) for m in metas):
            return "audiofolder"
        if any(True for _ in [*src.glob("metadata.jsonl"), *src.glob("*/metadata.jsonl")]):
            return "audiofolder"
        if (src / "dataset_info.json").is_file() or (src / "dataset_dict.json").is_file():
            return "disk"
        if any(src.rglob("*.parquet")):
            return "parquet"
        return None
    if src.suffix == ".parquet":
        return "parquet"
    if src.name.endswith(".jsonl"):
        row = first_json(src)
        native = row is None or "audio_filepath" in row or ("id" in row and "audio" in row)
        if (
            row
            and not native
            and any(k in row for k in PATH_KEYS)
            and any(k in row for k in TEXT_KEYS)
        ):
            return "jsonl"
    return None


def _csv_has_file_name(path: Path) -> bool:
    with path.open("rb") as f:
        return b"file_name" in f.readline()


def detect(src: Path) -> bool:
    return _kind(src) is not None


def _datasets() -> Any:
    try:
        import datasets  # optional extra: tokunify[hf]
    except ImportError:
        raise SourceError(
            "reading Hugging Face datasets needs `pip install tokunify[hf]`"
        ) from None
    return datasets


def _splits(src: Path, kind: str) -> Iterator[tuple[str, Iterable[dict[str, Any]], str | None]]:
    """(split name, rows, audio column) of each split."""
    ds_mod = _datasets()
    if kind == "disk":
        loaded = ds_mod.load_from_disk(str(src))
    else:
        files = [str(src)] if src.is_file() else sorted(str(p) for p in src.rglob("*.parquet"))
        loaded = ds_mod.load_dataset("parquet", data_files=files)
    dsets = loaded if isinstance(loaded, ds_mod.DatasetDict) else {"": loaded}
    for split, ds in dsets.items():
        col = next((n for n, f in ds.features.items() if isinstance(f, ds_mod.Audio)), None)
        if col is not None:
            ds = ds.cast_column(col, ds_mod.Audio(decode=False))
        yield split, ds, col


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((row[k] for k in keys if row.get(k) not in (None, "")), None)


def _row(row: dict[str, Any], col: str | None, base: Path, where: str, n: int,
         opts: ImportOptions) -> Row:  # fmt: skip
    value = row.get(col) if col else _first(row, PATH_KEYS)
    path, data = (
        (value.get("path"), value.get("bytes")) if isinstance(value, dict) else (value, None)
    )
    utt = _first(row, ID_KEYS) or (Path(path).with_suffix("").name if path else f"row{n:08d}")
    utt = str(utt)
    text = _first(row, TEXT_KEYS)
    speaker = _first(row, SPEAKER_KEYS)
    audio = resolve(str(path), base) if path else None
    if audio is None or not audio.is_file():
        if data is None:
            return Reject(
                utt, str(audio) if audio else None, f"{where}: audio file not found ({path})"
            )
        if opts.audio_dir is None:
            return Reject(
                utt,
                None,
                f"{where}: audio is embedded bytes; `tokunify prepare` writes them to files",
            )
        suffix = Path(path).suffix if path else ".wav"
        audio = opts.audio_dir / f"{utt.replace('/', '_')}{suffix or '.wav'}"
        audio.parent.mkdir(parents=True, exist_ok=True)
        audio.write_bytes(data)
    if not isinstance(text, str):
        return Reject(utt, str(audio), f"{where}: no transcript column ({', '.join(TEXT_KEYS)})")
    return Entry(id=utt, audio=audio, text=text, speaker=None if speaker is None else str(speaker))


def _jsonl_rows(path: Path, base: Path, opts: ImportOptions) -> Iterator[Row]:
    for n, (where, line) in enumerate(text_lines(path)):
        if isinstance(line, ValueError):
            yield Reject(None, None, str(line))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield Reject(None, None, f"{where}: malformed row ({e})")
            continue
        yield _row(row, None, base, where, n, opts)


def _csv_meta_rows(path: Path, opts: ImportOptions) -> Iterator[Row]:
    for n, (where, row) in enumerate(csv_rows(path, ",", csv.QUOTE_MINIMAL)):
        if isinstance(row, ValueError):
            yield Reject(None, None, str(row))
        else:
            yield _row(row, None, path.parent, where, n, opts)


def rows(src: Path, opts: ImportOptions) -> Iterator[Row]:
    """Every row of every split (split order as stored), ids from an id column or the file name."""
    kind = _kind(src)
    base = src if src.is_dir() else src.parent
    if kind == "jsonl":
        yield from _jsonl_rows(src, base, opts)
        return
    if kind == "audiofolder":
        for meta in sorted(src.rglob("metadata.csv")) + sorted(src.rglob("metadata.jsonl")):
            if meta.suffix == ".csv":
                yield from _csv_meta_rows(meta, opts)
            else:
                yield from _jsonl_rows(meta, meta.parent, opts)
        return
    for split, ds, col in _splits(src, str(kind)):
        for n, row in enumerate(ds):
            yield _row(row, col, base, f"{src} {split or 'dataset'} row {n}", n, opts)


IMPORTER = Importer(
    name="hf",
    description="HF datasets: audiofolder, save_to_disk or Parquet with an Audio column (extra [hf]); HF-style JSONL",
    detect=detect,
    rows=rows,
    example="tokunify prepare my_dataset/ --out train.jsonl --format hf",
)
