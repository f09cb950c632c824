"""P18: corpus tokenization throughput per engine, on one manifest, with two tokenizers.

Engines (each a fresh `tokunify tokenize` command, start-up included, as a user would run it):

- native, 1 process (torch's default threads): the baseline;
- torchrun, 2 ranks (``--nproc-per-node 2``, 1 thread each): launcher-aware slices into one store;
- ``--workers 2``: a local process pool;
- Ray Data, 2 tokenizer actors (``--engine ray``, a local Ray started by the command).

Tokenizers: mel units (MFCC + k-means, trained here) and a base-size HuBERT (random init, no
download; 500 random centroids at layer 6). Every engine's store is checked byte-identical to the
baseline's. Audio hours per hour = audio seconds / wall seconds.

Run: python benchmarks/tokenize_scale.py [--mel-utterances 400] [--hubert-utterances 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _corpus import VOICES, WORDS

ENGINES: dict[str, list[str]] = {
    "native, 1 process": [],
    "torchrun, 2 ranks": ["torchrun"],
    "--workers 2": ["--workers", "2"],
    "Ray, 2 actors": ["--engine", "ray", "--ray-actors", "2", "--ray-cpus-per-actor", "0.75",
                      "--ray-decode-cpus", "0.25"],
}  # fmt: skip


def corpus(work: Path, n: int) -> tuple[Path, float]:
    """``n`` espeak utterances of 6..20 words; returns the manifest and its audio seconds."""
    import numpy as np
    import soundfile as sf

    from tokunify.data.corpus.espeak import Espeak
    from tokunify.data.manifest import Entry, write_manifest

    rng, engine, entries, secs = np.random.default_rng(0), Espeak(), [], 0.0
    (work / "wavs").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = engine.synthesize(" ".join(rng.choice(WORDS, int(rng.integers(6, 21)))), VOICES[i % 3])
        sf.write(work / "wavs" / f"w{i}.wav", s.audio, s.sample_rate)
        entries.append(Entry(id=f"u{i}", audio=work / "wavs" / f"w{i}.wav"))
        secs += len(s.audio) / s.sample_rate
    write_manifest(entries, work / f"m{n}.jsonl")
    return work / f"m{n}.jsonl", secs


def mel_tokenizer(work: Path, manifest: Path) -> Path:
    import yaml

    from tokunify.cli import main

    (work / "mel.yaml").write_text(
        yaml.safe_dump({"kind": "mel_units", "features": {"kind": "mfcc"}})
    )
    main(["train-kmeans", str(manifest), "--tokenizer", str(work / "mel.yaml"), "--k", "100",
          "--max-utterances", "200", "--out", str(work / "mel"), "--overwrite"])  # fmt: skip
    return work / "mel" / "tokenizer.yaml"


def hubert_tokenizer(work: Path) -> Path:
    """A base-size HuBERT (12 layers, 768 dims; random init), saved, and 500 random centroids."""
    import torch
    import yaml
    from transformers import HubertConfig, HubertModel

    from tokunify.tokenizers.kmeans import KMeans

    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(work / "hubert")
    KMeans(torch.randn(500, 768, dtype=torch.float64)).save(work / "hubert_km.safetensors")
    cfg = {"kind": "ssl_units", "source": str(work / "hubert"), "layer": 6,
           "centroids": "hubert_km.safetensors", "dedup": True}  # fmt: skip
    (work / "hubert.yaml").write_text(yaml.safe_dump(cfg))
    return work / "hubert.yaml"


def run(engine: list[str], manifest: Path, tok: Path, out: Path, chunk: int) -> float:
    args = ["tokenize", str(manifest), "--out", str(out), "--tokenizer", f"units={tok}",
            "--chunk-size", str(chunk), "--batch-seconds", "60", "--no-progress"]  # fmt: skip
    if engine[:1] == ["torchrun"]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "tokunify", *args]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "tokunify", *args, *engine]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return wall


def same_store(a: Path, b: Path) -> str:
    """ "identical" (byte for byte), else how many utterances got other units than the baseline."""
    from tokunify.data.store import TokenStore

    def files(d: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in d.iterdir() if not p.name.startswith(".")}

    if files(a) == files(b):
        return "identical"
    units = [{r.id: r.streams["units"].tolist() for r in TokenStore(s).iterate(shuffle=False)}
             for s in (a, b)]  # fmt: skip
    diff = sum(units[0][k] != units[1].get(k) for k in units[0])
    return f"{diff}/{len(units[0])} utterances differ"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mel-utterances", type=int, default=400)
    ap.add_argument("--hubert-utterances", type=int, default=32)
    ap.add_argument("--engines", nargs="*", default=list(ENGINES))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mel_m, mel_s = corpus(work, a.mel_utterances)
        hub_m = work / f"m{a.hubert_utterances}.jsonl"
        hub_m.write_text("".join(mel_m.read_text().splitlines(True)[: a.hubert_utterances]))
        import soundfile as sf

        from tokunify.data.manifest import read_manifest

        hub_s = sum(sf.info(str(e.audio)).duration for e in read_manifest(hub_m))
        cases = [("mel units", mel_m, mel_s, mel_tokenizer(work, mel_m), a.mel_utterances // 8),
                 ("HuBERT-base L6", hub_m, hub_s, hubert_tokenizer(work), a.hubert_utterances // 8)]  # fmt: skip
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n")
        print(
            "| tokenizer | engine | audio s | wall s | audio h / h | overhead vs native | store vs native |"
        )
        print("|---|---|---:|---:|---:|---:|---|")
        for name, manifest, secs, tok, chunk in cases:
            base = None
            for i, label in enumerate(a.engines):
                out = work / f"store-{name[:3]}-{i}"
                wall = run(ENGINES[label], manifest, tok, out, chunk)
                if base is None:
                    base, ref = wall, out
                over = f"{100 * (wall / base - 1):+.0f}%"
                same = same_store(out, ref)
                print(f"| {name} | {label} | {secs:.0f} | {wall:.1f} | {secs / wall:.1f} | {over} | {same} |",
                      flush=True)  # fmt: skip
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
