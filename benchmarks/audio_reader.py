"""Audio reading for `tokunify tokenize`: soundfile vs fairseq2's native data pipeline.

Same manifest (espeak wavs, 22.05 kHz), same checks. Measures (1) decode only (`read_many`),
(2) the whole tokenize job (mel units, one worker) with each reader. Needs the fairseq2 extra
(CI leg 2's environment, with libsndfile on LD_LIBRARY_PATH).

Run: python benchmarks/audio_reader.py [--utterances 600]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _corpus import build_store

from tokunify.cli import main as cli
from tokunify.data.audio import read_many
from tokunify.data.manifest import read_manifest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=600)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    paths = build_store(work, n_utts=args.utterances, k=50)
    items = [(e.audio, e.start, e.end) for e in read_manifest(paths["manifest"])]
    audio_s = sum(w.shape[-1] / sr for w, sr in read_many(items))  # also warms the page cache
    rows = []
    for reader, kw in [
        ("soundfile", {}),
        ("fairseq2", {"workers": 1}),
        ("fairseq2", {"workers": 4}),
    ]:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            read_many(items, reader, **kw)
            best = min(best, time.perf_counter() - t0)
        rows.append((f"{reader}" + (f" ({kw['workers']} parallel)" if kw else ""), best))
    job = {}
    for reader in ("soundfile", "fairseq2"):
        out = work / f"store-{reader}"
        t0 = time.perf_counter()
        cli(
            [
                "tokenize",
                str(paths["manifest"]),
                "--out",
                str(out),
                "--tokenizer",
                f"units={paths['tokenizer']}",
                "--reader",
                reader,
                "--no-progress",
                "--chunk-size",
                "200",
            ]
        )
        job[reader] = time.perf_counter() - t0
        shutil.rmtree(out)
    print(f"\n{len(items)} wav files, {audio_s:.0f} s of audio (page cache warm)\n")
    print("| reader | decode s | files/s | vs soundfile |")
    print("|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {len(items) / t:,.0f} | {rows[0][1] / t:.2f}x |")
    print("\n| tokenize job (mel units, 1 worker) | wall s |")
    print("|---|---|")
    for reader, t in job.items():
        print(f"| --reader {reader} | {t:.2f} |")


if __name__ == "__main__":
    main()
