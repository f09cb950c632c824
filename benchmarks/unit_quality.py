"""How phonetic and how speaker-independent are offline units? Plain MFCC units vs spliced MFCC + LDA.

Builds an espeak corpus (`synth-corpus`: train voices, held-out sentences with seen voices, and one
held-out voice), trains k-means for each tokenizer config through `train-kmeans`, and measures on
the two test splits, frame by frame against espeak's phone alignment:

- PNMI: phone-normalised mutual information I(phone; unit) / H(phone) (HuBERT paper, sec. IV-D).
- phone purity: the share of frames whose unit's most frequent phone is their phone.
- units/s after dedup (the LM's sequence length).
- resynthesis ceiling: the unit edit error (as `eval` computes it) of the test audio's own log-mel
  put through the vocoders' Griffin-Lim, i.e. how much a perfect unit->mel model would still lose.

The baseline (row 1) is the plain MFCC + deltas tokenizer; the LDA rows run beside it on the same
corpus. Usage: python benchmarks/unit_quality.py [--utts 1500] [--k 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from tokunify.cli import main as cli
from tokunify.manifest import read_manifest

CONFIGS = {
    "mfcc20+d+dd, cmvn (baseline)": ({"kind": "mfcc", "n_mfcc": 20, "deltas": True}, 0),
    "mfcc20 cmvn, splice 4, LDA 32": (
        {"kind": "mfcc", "n_mfcc": 20, "deltas": False, "splice": 4},
        32,
    ),
    "mfcc13 cmvn, splice 4, LDA 32": (
        {"kind": "mfcc", "n_mfcc": 13, "deltas": False, "splice": 4},
        32,
    ),
}


def pnmi_purity(units: np.ndarray, phones: np.ndarray) -> tuple[float, float]:
    joint = np.zeros((units.max() + 1, phones.max() + 1))
    np.add.at(joint, (units, phones), 1)
    p = joint / joint.sum()
    pu, pp = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pu @ pp)[nz])).sum())
    h = float(-(pp[pp > 0] * np.log(pp[pp > 0])).sum())
    return mi / h, float(joint.max(1).sum() / joint.sum())


def measure(tok, entries, n_resynth: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from tokunify.audio import load as load_audio
    from tokunify.generate.evaluate import unit_edit_error
    from tokunify.tokenizers.lda import frame_labels
    from tokunify.vocoder.unitmel import LogMelSpec, UnitMelConfig

    spec = LogMelSpec(UnitMelConfig(num_embeddings=1))  # the vocoders' analysis and Griffin-Lim
    units, labels, n_units, seconds, refs, hyps = [], [], 0, 0.0, [], []
    for i, e in enumerate(entries):
        wav = load_audio(e.audio, 16000)
        res = tok.encode([wav])
        u, d = res.ids[0].numpy(), res.durations[0].numpy()
        frames = np.repeat(u, d)
        units.append(frames)
        labels += frame_labels(e.extra["phones"], len(frames), tok.frame_rate)
        n_units, seconds = n_units + len(u), seconds + len(wav) / 16000
        if i < n_resynth:
            with torch.inference_mode():
                back = spec.to_audio(spec(torch.from_numpy(wav)[None]))[0].numpy()
            refs.append(u)
            hyps.append(tok.encode([back]).ids[0].numpy())
    names = {n: i for i, n in enumerate(sorted(set(labels)))}
    pnmi, purity = pnmi_purity(np.concatenate(units), np.array([names[n] for n in labels]))
    return {"pnmi": pnmi, "purity": purity, "units_per_s": n_units / seconds,
            "gl_ceiling": unit_edit_error(refs, hyps)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utts", type=int, default=1500)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument(
        "--resynth", type=int, default=60, help="test utterances for the Griffin-Lim ceiling"
    )
    args = ap.parse_args()
    from tokunify.corpus.synth import TRAIN_VOICES
    from tokunify.tokenizers.base import tokenizer_from_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cli(["synth-corpus", "--out", str(work / "c"), "--utterances", str(args.utts), "--test-utterances", str(args.test),
             "--voices", *TRAIN_VOICES])  # fmt: skip
        splits = {
            s: list(read_manifest(work / "c" / f"{s}.jsonl")) for s in ("test_seen", "test_unseen")
        }
        rows = []
        for name, (features, lda) in CONFIGS.items():
            cfg = work / "cfg.yaml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "kind": "mel_units",
                        "features": {**features, "cmvn": "utterance"},
                        "dedup": True,
                    }
                )
            )
            out = work / f"u{len(rows)}"
            t = time.perf_counter()
            argv = ["train-kmeans", str(work / "c" / "train.jsonl"), "--tokenizer", str(cfg), "--k", str(args.k),
                    "--out", str(out), "--max-utterances", str(args.utts)]  # fmt: skip
            assert cli(argv + (["--lda-dim", str(lda)] if lda else [])) == 0
            fit_s = time.perf_counter() - t
            tok = tokenizer_from_config(
                yaml.safe_load((out / "tokenizer.yaml").read_text()), base_dir=out
            )
            res = {s: measure(tok, e, args.resynth) for s, e in splits.items()}
            rows.append((name, fit_s, res))
    print(
        f"\n{args.utts} training utterances, {len(TRAIN_VOICES)} voices; K={args.k}; {args.test} test utterances per split\n"
    )
    print(
        "| units | fit s | PNMI seen | PNMI unseen voice | purity seen | purity unseen | units/s | GL ceiling (unit err) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, fit_s, r in rows:
        s, u = r["test_seen"], r["test_unseen"]
        print(f"| {name} | {fit_s:.1f} | {s['pnmi']:.3f} | {u['pnmi']:.3f} | {s['purity']:.3f} | {u['purity']:.3f} | "
              f"{s['units_per_s']:.1f} | {s['gl_ceiling']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
