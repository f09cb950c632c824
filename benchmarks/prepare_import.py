"""`tokunify prepare`: import time per hour of audio, per layout, for short espeak utterances.

Writes ``--utterances`` espeak clips (22.05 kHz) as a folder of wav + .txt, a LibriSpeech tree
(FLAC), a Kaldi data dir, a NeMo manifest and an LJSpeech folder; times ``tokunify prepare`` (the
CLI entry, format auto-detected) on each, warm page cache, best of ``--repeats``. Baseline beside
it: the hand-written converter every user writes today (glob the audio, read the .txt next to
it, dump JSON lines), on the same folder. ``prepare`` reads no audio samples (only checks that the
files exist), so the time is per row, not per audio second: short clips are its worst case.

Run: python benchmarks/prepare_import.py [--utterances 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from _corpus import VOICES, speech

from tokunify.cli import main as cli


def write_layouts(work: Path, n: int) -> tuple[dict[str, Path], float]:
    """The same utterances in five layouts; returns their sources and the audio seconds."""
    sr = 22050
    wavs = speech(n, sr)
    texts = [f"utterance number {i}" for i in range(n)]
    folder, libri, kaldi, lj = (
        work / "folder",
        work / "LibriSpeech" / "dev",
        work / "kaldi",
        work / "LJ",
    )
    for d in (folder, kaldi / "wav", lj / "wavs"):
        d.mkdir(parents=True)
    scp, text, spk, nemo, meta = [], [], [], [], []
    trans: dict[Path, list[str]] = {}
    for i, (w, t) in enumerate(zip(wavs, texts, strict=True)):
        sf.write(folder / f"u{i:05d}.wav", w, sr)
        (folder / f"u{i:05d}.txt").write_text(t)
        s = i % len(VOICES)
        utt = f"{s}-7-{i:04d}"
        d = libri / str(s) / "7"
        d.mkdir(parents=True, exist_ok=True)
        sf.write(d / f"{utt}.flac", w, sr)
        trans.setdefault(d / f"{s}-7.trans.txt", []).append(f"{utt} {t.upper()}")
        sf.write(kaldi / "wav" / f"{utt}.wav", w, sr)
        scp.append(f"{utt} {kaldi / 'wav' / utt}.wav")
        text.append(f"{utt} {t}")
        spk.append(f"{utt} {s}")
        nemo.append(json.dumps({"audio_filepath": str(folder / f"u{i:05d}.wav"), "text": t,
                                "duration": len(w) / sr}))  # fmt: skip
        sf.write(lj / "wavs" / f"LJ001-{i:04d}.wav", w, sr)
        meta.append(f"LJ001-{i:04d}|{t}|{t}")
    for p, lines in trans.items():
        p.write_text("\n".join(lines) + "\n")
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2spk", spk)):
        (kaldi / name).write_text("\n".join(lines) + "\n")
    (work / "nemo.json").write_text("\n".join(nemo) + "\n")
    (lj / "metadata.csv").write_text("\n".join(meta) + "\n")
    srcs = {"folder": folder, "librispeech": libri, "kaldi": kaldi, "nemo": work / "nemo.json",
            "ljspeech": lj}  # fmt: skip
    return srcs, sum(len(w) / sr for w in wavs)


def hand_written(folder: Path, out: Path) -> None:
    """The converter users write by hand: one JSON line per audio file with its .txt."""
    with out.open("w") as f:
        for wav in sorted(folder.glob("*.wav")):
            f.write(json.dumps({"id": wav.stem, "audio": str(wav),
                                "text": wav.with_suffix(".txt").read_text().strip()}) + "\n")  # fmt: skip


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    srcs, audio_s = write_layouts(work, args.utterances)
    hours = audio_s / 3600
    print(
        f"{args.utterances} utterances, {audio_s:.0f} s of audio ({audio_s / args.utterances:.2f} s each)"
    )
    print("| layout | rows | prepare s | s per audio hour | rows/s |")
    print("|---|---|---|---|---|")
    for name, src in srcs.items():
        out = work / f"{name}.jsonl"

        def run(src: Path = src, out: Path = out) -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli(["prepare", str(src), "--out", str(out), "--overwrite"]) == 0

        t = best(run, args.repeats)
        rows = len(out.read_text().splitlines())
        print(f"| {name} | {rows} | {t:.3f} | {t / hours:.2f} | {rows / t:.0f} |")
    t = best(lambda: hand_written(srcs["folder"], work / "hand.jsonl"), args.repeats)
    print(
        f"| folder, hand-written loop (baseline) | {args.utterances} | {t:.3f} | {t / hours:.2f} | {args.utterances / t:.0f} |"
    )


if __name__ == "__main__":
    main()
