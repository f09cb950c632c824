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

`--ssl-steps N` adds HuBERT rows (issue 17): `train-ssl` iteration 1 on the baseline's MFCC k-means
units (no alignment), then k-means on each of its layers through `ssl_units`, and, with
`--ssl-iter2`, iteration 2 on the best layer's units. HuBERT's claim under test: iteration-1 units
carry more phonetic information (PNMI) than the MFCC targets they were trained to predict.
`--ssl-encoder DIR` measures an encoder trained elsewhere (e.g. `ssl-units`' iter1/encoder) instead.
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
from tokunify.data.manifest import read_manifest

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
    from tokunify.data.audio import load as load_audio
    from tokunify.eval.generative import unit_edit_error
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
            "gl_ceiling": unit_edit_error(refs, hyps) if refs else float("nan")}  # fmt: skip


def ssl_rows(args, corpus: Path, work: Path, mfcc_units: Path, splits) -> list:  # type: ignore[no-untyped-def]
    """HuBERT iteration 1 (and 2) on the baseline's MFCC units: one row per layer of k-means."""
    from tokunify.tokenizers.base import tokenizer_from_config

    def train(targets: Path, out: Path) -> Path:
        t = time.perf_counter()
        argv = ["train-ssl", str(corpus / "train.jsonl"), "--targets", str(targets), "--out", str(out),
                "--steps", str(args.ssl_steps), "--max-utterances", str(args.ssl_utts), "--lr", str(args.ssl_lr),
                "--unmasked-weight", str(args.ssl_unmasked_weight), "--model", args.ssl_model,
                "--mixed-precision", "auto", "--log-every", "50"]  # fmt: skip
        assert cli(argv) == 0
        print(f"train-ssl {out.name}: {time.perf_counter() - t:.0f} s")
        return out / "encoder"

    def layer_rows(enc: Path, tag: str, fit_s: float) -> list:  # type: ignore[no-untyped-def]
        from transformers import AutoConfig

        found = []
        for layer in range(1, AutoConfig.from_pretrained(enc).num_hidden_layers + 1):
            cfg = work / f"{tag}_l{layer}.yaml"
            cfg.write_text(
                yaml.safe_dump({"kind": "ssl_units", "source": str(enc), "layer": layer})
            )
            out = work / f"{tag}_km{layer}"
            t = time.perf_counter()
            assert cli(["train-kmeans", str(corpus / "train.jsonl"), "--tokenizer", str(cfg), "--k", str(args.k),
                        "--out", str(out), "--max-utterances", str(min(args.utts, 1000))]) == 0  # fmt: skip
            tok = tokenizer_from_config(
                yaml.safe_load((out / "tokenizer.yaml").read_text()), base_dir=out
            )
            res = {s: measure(tok, e, 0) for s, e in splits.items()}
            found.append(
                (f"HuBERT {tag}, layer {layer}, k-means", fit_s + time.perf_counter() - t, res, out)
            )
        return found

    if args.ssl_targets:
        mfcc_units = Path(args.ssl_targets)
    target_tok = tokenizer_from_config(
        yaml.safe_load(mfcc_units.read_text()), base_dir=mfcc_units.parent
    )
    rows = [(f"iteration-1 targets (MFCC k-means K={target_tok.cardinality})", 0.0,
             {s: measure(target_tok, e, 0) for s, e in splits.items()}, mfcc_units.parent)]  # fmt: skip
    t = time.perf_counter()
    enc1 = Path(args.ssl_encoder) if args.ssl_encoder else train(mfcc_units, work / "it1")
    rows += layer_rows(enc1, "iter 1", time.perf_counter() - t if not args.ssl_encoder else 0.0)
    if args.ssl_iter2:
        best = max(rows[1:], key=lambda r: r[2]["test_seen"]["pnmi"])
        t = time.perf_counter()
        enc2 = train(best[3] / "tokenizer.yaml", work / "it2")
        rows += layer_rows(enc2, "iter 2", time.perf_counter() - t)
    return [r[:3] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utts", type=int, default=1500)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument(
        "--resynth", type=int, default=60, help="test utterances for the Griffin-Lim ceiling"
    )
    ap.add_argument("--corpus", help="an existing synth-corpus dir (default: synthesize one)")
    ap.add_argument(
        "--ssl-steps", type=int, default=0, help="train-ssl steps per iteration (0: no SSL rows)"
    )
    ap.add_argument(
        "--ssl-encoder", help="measure this iteration-1 HubertModel dir instead of training one"
    )
    ap.add_argument(
        "--ssl-targets", help="with --ssl-encoder: the units tokenizer.yaml it learned from"
    )
    ap.add_argument("--ssl-iter2", action="store_true", help="also train and measure iteration 2")
    ap.add_argument("--ssl-utts", type=int, default=3000, help="utterances train-ssl reads")
    ap.add_argument("--ssl-lr", type=float, default=2e-3, help="train-ssl peak learning rate")
    ap.add_argument(
        "--ssl-unmasked-weight",
        type=float,
        default=1.0,
        help="train-ssl loss weight on unmasked frames (1: the demo's; 0: HuBERT's masked-only loss)",
    )
    ap.add_argument("--ssl-model", default="tiny", help="train-ssl --model (preset or config file)")
    ap.add_argument("--only-baseline", action="store_true", help="skip the LDA rows")
    args = ap.parse_args()
    from tokunify.data.corpus.synth import TRAIN_VOICES
    from tokunify.tokenizers.base import tokenizer_from_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = Path(args.corpus) if args.corpus else work / "c"
        if not args.corpus:
            cli(["synth-corpus", "--out", str(corpus), "--utterances", str(args.utts), "--test-utterances", str(args.test),
                 "--voices", *TRAIN_VOICES])  # fmt: skip
        splits = {
            s: list(read_manifest(corpus / f"{s}.jsonl"))[: args.test]
            for s in ("test_seen", "test_unseen")
        }
        rows = []
        configs = dict(list(CONFIGS.items())[:1]) if args.only_baseline else CONFIGS
        for name, (features, lda) in configs.items():
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
            argv = ["train-kmeans", str(corpus / "train.jsonl"), "--tokenizer", str(cfg), "--k", str(args.k),
                    "--out", str(out), "--max-utterances", str(args.utts)]  # fmt: skip
            assert cli(argv + (["--lda-dim", str(lda)] if lda else [])) == 0
            fit_s = time.perf_counter() - t
            tok = tokenizer_from_config(
                yaml.safe_load((out / "tokenizer.yaml").read_text()), base_dir=out
            )
            res = {s: measure(tok, e, args.resynth) for s, e in splits.items()}
            rows.append((name, fit_s, res))
        if args.ssl_steps or args.ssl_encoder:
            rows += ssl_rows(args, corpus, work, work / "u0" / "tokenizer.yaml", splits)
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
