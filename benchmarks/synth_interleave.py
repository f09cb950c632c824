"""Issue 16, throughput: speech tokens per second of synthetic interleaving vs the real path.

The same text documents become speech tokens two ways:

- real (the baseline): espeak-ng audio (:class:`tokunify.data.corpus.espeak.Espeak`, one training
  voice per document), then ``tokenize`` (:func:`tokunify.tokenize.commands.run_tokenize`) with the
  bundle's unit tokenizer;
- synthetic: ``synth-interleave`` (:func:`tokunify.synth.interleave.run_synth_interleave`)
  at speech ratio 1 (every word spoken, one span per document), units from the TTS bundle, with
  TTS batch 1 and the default batch.

Each row times the whole command (model loading included). Speech tokens are units (deduplicated
in both paths); tokens/word compares the speech-token budgets of both. The TTS bundle, unit
tokenizer and text come from a ``synth_interleave_ab.py`` work directory (``--setup``; its TTS
model is trained on the same kind of espeak speech), or from its tiny setting built here.

Run: python benchmarks/synth_interleave.py --setup ab_out [--docs 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def documents(setup: Path, n: int) -> list[str]:
    """``n`` documents: the setup's fact documents, then grammar statements."""
    from tokunify.data.corpus.grammar import Grammar

    docs = (setup / "corpus" / "docs_text.txt").read_text().split("\n")
    docs = [d for d in docs if d.strip()]
    g = Grammar(7)
    while len(docs) < n:
        docs.append(g.statement())
    return docs[:n]


def real_path(docs: list[str], setup: Path, work: Path) -> dict[str, float]:
    """espeak audio + ``tokenize``: wall seconds of each and the units they give."""
    import soundfile as sf

    from tokunify.data.corpus.espeak import Espeak
    from tokunify.data.corpus.synth import TRAIN_VOICES
    from tokunify.data.manifest import Entry, write_manifest
    from tokunify.data.store import TokenStore
    from tokunify.tokenize.commands import TokenizeArgs, run_tokenize

    t0 = time.perf_counter()
    engine, entries, seconds = Espeak(), [], 0.0
    (work / "wavs").mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(docs):
        s = engine.synthesize(text, TRAIN_VOICES[i % 4])
        path = work / "wavs" / f"d{i}.wav"
        sf.write(path, s.audio, s.sample_rate)
        entries.append(Entry(id=f"d{i}", audio=path, text=text))
        seconds += len(s.audio) / s.sample_rate
    manifest = write_manifest(entries, work / "docs.jsonl")
    t1 = time.perf_counter()
    store = work / "real_store"
    run_tokenize(TokenizeArgs(manifest=str(manifest), out=str(store), progress=False,
                              tokenizer=[f"units={setup / 'units' / 'tokenizer.yaml'}"]))  # fmt: skip
    t2 = time.perf_counter()
    units = sum(len(r.streams["units"]) for r in TokenStore(store))
    return {"espeak_s": t1 - t0, "tokenize_s": t2 - t1, "units": units, "audio_s": seconds}


def synthetic_path(docs: list[str], setup: Path, work: Path, batch: int, device: str) -> dict[str, float]:  # fmt: skip
    from tokunify.synth.interleave import SynthInterleaveArgs, run_synth_interleave

    text = work / "docs.txt"
    text.write_text("".join(d + "\n" for d in docs))
    out = work / f"synth_b{batch}"
    t0 = time.perf_counter()
    summary = run_synth_interleave(SynthInterleaveArgs(text=str(text), bundle=str(setup / "tts" / "final"),
                                                       out=str(out), speech_ratio=1.0, batch_size=batch,
                                                       device=device, progress=False))  # fmt: skip
    wall = time.perf_counter() - t0
    st = summary["stats"]
    return {"wall_s": wall, "units": st["speech_units"], "spoken_words": st["speech_ratio"] * st["words"],
            "kept": st["kept_share"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", default="", help="a synth_interleave_ab.py work dir (default: its tiny setting, built here)")  # fmt: skip
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--batch", type=int, default=64, help="the default TTS batch (spans)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="synth_tp_"))
    setup = Path(a.setup) if a.setup else tmp / "setup"
    if not a.setup:
        from synth_interleave_ab import SETTINGS, build_setup

        build_setup(setup, SETTINGS["tiny"], {})
    docs = documents(setup, a.docs)
    words = sum(len(d.split()) for d in docs)
    real = real_path(docs, setup, tmp)
    rows = [
        (
            "real: espeak + tokenize (baseline)",
            real["espeak_s"] + real["tokenize_s"],
            real["units"],
            words,
            1.0,
        )
    ]
    for batch in (1, a.batch):
        s = synthetic_path(docs, setup, tmp, batch, a.device)
        rows.append(
            (f"synthetic, TTS batch {batch}", s["wall_s"], s["units"], s["spoken_words"], s["kept"])
        )
    base = rows[0][2] / rows[0][1]
    print(f"\n{len(docs)} documents, {words} words; real audio {real['audio_s']:.0f} s "
          f"(espeak {real['espeak_s']:.1f} s + tokenize {real['tokenize_s']:.1f} s); device {a.device}")  # fmt: skip
    print(
        "| path | wall s | speech tokens | spoken words | tokens/word | speech tokens/s | vs real | spans kept |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, wall, units, spoken, kept in rows:
        rate = units / wall
        print(f"| {name} | {wall:.1f} | {units} | {spoken:.0f} | {units / max(spoken, 1):.1f} | {rate:.0f} | "
              f"x{rate / base:.2f} | {kept:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
