"""`tokunify prepare`: write tokunify's manifest (and a rejects file) from a corpus layout."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tokunify.data.importers import (
    TEXT_NORMALIZERS,
    ImportOptions,
    SourceError,
    detect,
    get_importer,
    import_rows,
    reject_summary,
)
from tokunify.data.manifest import Entry, write_manifest
from tokunify.data.store import Reject

Format = Literal["auto", "librispeech", "folder", "kaldi", "nemo", "lhotse", "hf", "commonvoice", "ljspeech"]  # fmt: skip


@dataclass
class PrepareArgs:
    """Write a tokunify manifest from a corpus in a layout people have (see README: Bring your own data)."""

    src: str = field(metadata={"positional": True})
    """The corpus: a directory, or a manifest file (NeMo JSONL, lhotse .jsonl[.gz], HF JSONL/Parquet, Common Voice .tsv)."""
    out: str
    """The manifest to write (JSONL); rejected rows go to OUT's name with .rejects.jsonl."""
    format: Format = "auto"
    """The layout; auto detects it and says which it chose."""
    text_normalize: Literal["none", "lower", "whisper"] = "none"
    """Transcripts as written, lower-cased, or Whisper's BasicTextNormalizer (what eval scores with)."""
    overwrite: bool = False
    """Replace an existing non-empty OUT."""


class PrepareError(ValueError):
    pass


def rejects_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".rejects.jsonl")


def run_prepare(args: PrepareArgs) -> dict[str, int]:
    src, out = Path(args.src), Path(args.out)
    if out.exists() and (out.is_dir() or out.stat().st_size > 0) and not args.overwrite:
        raise PrepareError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    assert args.text_normalize in TEXT_NORMALIZERS
    t0 = time.perf_counter()
    importer = detect(src) if args.format == "auto" else get_importer(args.format)
    if not src.exists():
        raise SourceError(f"{src}: not found")
    if not importer.detect(src):
        raise SourceError(f"{src}: not a {importer.name} layout ({importer.description}); "
                          "--format auto detects the layout")  # fmt: skip
    how = "detected" if args.format == "auto" else "given"
    print(f"prepare: format {importer.name} ({how}): {importer.description}")
    opts = ImportOptions(audio_dir=out.with_name(out.name.removesuffix(".jsonl") + ".audio"))
    entries: list[Entry] = []
    rejects: list[Reject] = []
    for row in import_rows(src, importer, opts, args.text_normalize):
        (entries if isinstance(row, Entry) else rejects).append(row)  # type: ignore[arg-type]
    rej = rejects_path(out)
    rej.parent.mkdir(parents=True, exist_ok=True)
    rej.write_text("".join(r.to_json() + "\n" for r in rejects), encoding="utf-8")
    read = len(entries) + len(rejects)
    if not entries:
        raise PrepareError(f"{src}: " + reject_summary(read, [r.reason for r in rejects], str(rej)))
    tmp = out.with_name(f".{out.name}.tmp")
    write_manifest(entries, tmp)
    os.replace(tmp, out)
    print(
        f"prepare: read {read} rows from {src} in {time.perf_counter() - t0:.1f} s: "
        f"{len(entries)} stored in {out}, {len(rejects)} rejected ({rej})"
    )
    return {"read": read, "stored": len(entries), "rejected": len(rejects)}
